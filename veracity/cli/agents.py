"""``veracity agent run``, ``trace``, ``serve``, ``list`` and ``validate``: an agent's task run
through the gateway (every model call with its receipt), a run's record checked against the
chain, an agent served over HTTP (and registered on chain), the registered agents with their
reputation and validations, and a validator answering the requests addressed to it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console

from veracity.chain.devnet import find_deployment
from veracity.cli.app import app, err
from veracity.errors import UsageError, VeracityError

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


def _account(dep: "Deployment", account: int) -> str:
    if not 0 <= account < len(dep.accounts):
        raise UsageError(f"--account must be between 0 and {len(dep.accounts) - 1}")
    return dep.accounts[account].key


def _port_free(port: int) -> None:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise UsageError(f"port {port} on 127.0.0.1 is in use: pick another with --port") from None


@agent_app.command("serve")
def serve(agent: Path = typer.Argument(..., help="the agent's YAML file"),
          port: int = typer.Option(8600, min=1, max=65535, help="port on 127.0.0.1"),
          url: str = typer.Option("http://127.0.0.1:8400/v1", help="the gateway's /v1 URL"),
          deployment: Optional[Path] = typer.Option(None, help="deployment file, for chain tools and --register "
                                                               "(default: the devnet's)"),
          account: int = typer.Option(0, help="which deployment account owns the agent and reads the chain"),
          register: bool = typer.Option(False, "--register/--no-register",
                                        help="register the agent on the AgentRegistry (its URI: the card's URL), "
                                             "unless this account already has an agent with that URI"),
          out: Path = typer.Option(Path("runs"), help="the folder the runs' records (JSONL) go to"),
          price: str = typer.Option("free", help="the price the card states")) -> None:
    """Serve the agent over HTTP: POST /tasks {"task"} runs it (one task at a time; a task that
    comes while one runs gets a 429), GET /card is its registration file, GET /runs/NAME.jsonl
    a run's record."""
    import hashlib

    import uvicorn

    from veracity.agents.record import RunRecord
    from veracity.agents.runtime import Run, chat_template, default_record_path, gateway_completer, run_agent
    from veracity.agents.server import agent_card, create_app, register_agent
    from veracity.agents.spec import load_agent
    from veracity.agents.tools import ToolContext, build_tools

    spec = load_agent(agent)
    render = chat_template(spec.model)  # before serving: an agent on another model fails now, not per task
    dep = None
    try:
        dep = find_deployment(deployment)
    except UsageError:  # chain tools say they need a deployment; everything else runs without one
        if deployment is not None or register:
            raise
    key = _account(dep, account) if dep is not None else None
    tools = build_tools(spec.tools, ToolContext(dep, url.removesuffix("/").removesuffix("/v1"), key))
    _port_free(port)
    base = f"http://127.0.0.1:{port}"
    registration = None
    if register and dep is not None and key is not None:
        reg = dep.agent_clients(key)[0]
        agent_id, new = register_agent(reg, f"{base}/card")
        registration = (agent_id, dep.chain_id, reg.address)
        err.print(f"{'registered' if new else 'already registered as'} agent {agent_id} (owner {reg.chain.address})")
        print(f"agent id {agent_id}", flush=True)
    spec_sha256 = hashlib.sha256(agent.read_bytes()).hexdigest()
    complete = gateway_completer(url, spec.model)

    def run_task(task: str) -> tuple[Run, Path]:
        path = default_record_path(out, spec.name)
        return run_agent(spec, task, complete, render, tools, RunRecord(path), spec_sha256), path

    card = agent_card(spec, base, list(tools), price, registration)
    app_ = create_app(lambda: card, run_task, base, out, f"{spec.name}-")
    err.print(f"agent {spec.name} on {base}/tasks (card {base}/card; model calls through {url})")
    uvicorn.run(app_, host="127.0.0.1", port=port, log_level="warning")


@agent_app.command("list")
def list_agents(deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
                as_json: bool = typer.Option(False, "--json", help="print JSON for machines")) -> None:
    """The app store: every registered agent (id, name from its card, owner, URI) with its
    feedback (count, average) and validations (answered requests, average score)."""
    import json

    from veracity.agents.store import entries_table, read_entries

    entries = read_entries(find_deployment(deployment))
    if as_json:
        print(json.dumps([e.to_json() for e in entries], indent=2))
    else:
        Console().print(entries_table(entries))


@agent_app.command("validate")
def validate(deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
             account: int = typer.Option(0, help="which deployment account is the validator"),
             once: bool = typer.Option(True, "--once/--watch", help="look once and exit, or keep watching"),
             every: float = typer.Option(10.0, min=0.5, help="seconds between looks (--watch)"),
             as_json: bool = typer.Option(False, "--json", help="print JSON for machines (one object per request; "
                                                                "with --watch, one line per change)")) -> None:
    """Answer the validation requests addressed to this account: fetch each request's run record
    (http(s):// or file://), check its keccak-256 is the request hash, verify every receipt, and
    answer 100 (verified) or 0 (a receipt failed, no receipts, not the requested record); no
    answer while a window is not committed yet. --watch also answers again when a passed run's
    window is overturned by a dispute (0) or finalized."""
    import json

    from rich.table import Table

    from veracity.agents.validate import Outcome, validate_pass

    dep = find_deployment(deployment)
    key = _account(dep, account)
    uris: dict[bytes, str] = {}

    def line(o: Outcome) -> str:
        answer = "" if o.score is None else f" {o.score} ({o.tag})"
        return f"request 0x{o.request_hash.hex()[:16]}… agent {o.agent_id}: {o.status}{answer}: {o.note}"

    if once:
        outcomes = validate_pass(dep, key, uris)
        if as_json:
            print(json.dumps([o.to_json() for o in outcomes], indent=2))
            return
        table = Table(title=f"{len(outcomes)} request{'s' * (len(outcomes) != 1)} to {dep.accounts[account].address}")
        for col in ("request", "agent", "status", "score", "tag", "why"):
            table.add_column(col, overflow="fold")
        for o in outcomes:
            table.add_row("0x" + o.request_hash.hex(), str(o.agent_id), o.status,
                          "" if o.score is None else str(o.score), o.tag, o.note)
        Console().print(table)
        return
    err.print(f"validator {dep.accounts[account].address}: watching (every {every:g} s; Ctrl-C stops)")
    seen: dict[bytes, tuple[str, int | None, str]] = {}
    while True:
        try:
            for o in validate_pass(dep, key, uris):
                state = (o.status, o.score, o.tag)
                if seen.get(o.request_hash) != state:
                    seen[o.request_hash] = state
                    print(json.dumps(o.to_json()) if as_json else line(o), flush=True)
        except VeracityError as exc:  # the chain is down: say so and look again
            err.print(f"error: {exc}")
        time.sleep(every)


app.add_typer(agent_app, name="agent")
