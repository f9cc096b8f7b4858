"""``veracity agent run``, ``trace``, ``serve``, ``list``, ``request-validation``, ``validate`` and
``feedback``: an agent's task run through the gateway (every model call with its receipt), a
run's record checked against the chain, an agent served over HTTP (and registered on chain), the
registered agents with their reputation and validations, an owner asking a validator to check a
run, a validator answering the requests addressed to it, and a client rating an agent."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console

from veracity.chain.devnet import find_deployment
from veracity.cli.app import account_key, app, err
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
                                                  "committed, and verify every receipt"),
        local: bool = typer.Option(False, "--local", help="run the model in this process, not through the gateway: "
                                                          "to try an agent out (no receipts, so never verified)")) -> None:
    """Run a task: the model picks tools or answers; prints the answer and where its record is."""
    import hashlib

    from veracity.agents.record import RunRecord
    from veracity.agents.runtime import (
        chat_template,
        default_record_path,
        gateway_completer,
        local_completer,
        run_agent,
    )
    from veracity.agents.spec import load_agent
    from veracity.agents.tools import ToolContext, build_tools

    spec = load_agent(agent)
    if local and wait:
        raise UsageError("--local runs have no receipts to wait for: drop --wait")
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
    complete = local_completer(spec.model) if local else gateway_completer(url, spec.model)
    done = run_agent(spec, task, complete, chat_template(spec.model), tools, record,
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
          out: Path = typer.Option(Path("runs"), help="the folder the runs' records (JSONL) and spans go to"),
          otlp_endpoint: Optional[str] = typer.Option(None, help="also export each run's spans to this OTLP/HTTP "
                                                                 "endpoint (default: $OTEL_EXPORTER_OTLP_ENDPOINT)"),
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
    key = account_key(dep, account) if dep is not None else None
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
        done = run_agent(spec, task, complete, render, tools, RunRecord(path), spec_sha256)
        try:
            _export(done.record, path, otlp_endpoint)
        except VeracityError as exc:  # the collector refused or is down: the run and its record stand
            err.print(f"[yellow]the run's spans were not exported: {exc}[/]")
        return done, path

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


def _validator(dep: "Deployment", validator: str) -> str:
    """``--validator``: an address, or a deployment account's index."""
    from web3 import Web3

    if validator.isdigit() and int(validator) < len(dep.accounts):
        return str(dep.accounts[int(validator)].address)
    if Web3.is_address(validator):
        return str(Web3.to_checksum_address(validator))
    raise UsageError(f"--validator {validator!r} is neither an address (0x and 40 hex digits) nor an account index "
                     f"(0 to {len(dep.accounts) - 1})")


@agent_app.command("request-validation")
def request_validation_cmd(
        run: str = typer.Argument(..., help="the run's record: its URI (http(s):// or file://, what the validator "
                                            "fetches) or a local file"),
        agent_id: int = typer.Option(..., "--agent-id", min=1, help="the agent that made the run"),
        validator: str = typer.Option(..., help="the validator asked: an address or a deployment account index"),
        deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
        account: int = typer.Option(0, help="which deployment account asks (the agent's owner or an operator)")) -> None:
    """Ask a validator to check a run: the request names the record's URI and its keccak-256, so
    the validator checks exactly these bytes. Prints the request hash (``validate`` answers it)."""
    from veracity.agents.validate import FetchError, fetch_uri, request_validation

    dep = find_deployment(deployment)
    key = account_key(dep, account)
    uri = run if "://" in run else Path(run).resolve().as_uri()
    try:
        data = fetch_uri(uri)
    except FetchError as exc:
        raise UsageError(f"cannot read the run's record: {exc}") from None
    h = request_validation(dep.agent_clients(key)[2], _validator(dep, validator), agent_id, uri, data)
    print(f"0x{h.hex()}")


@agent_app.command("feedback")
def feedback(agent_id: int = typer.Argument(..., min=1, help="the agent rated"),
             score: float = typer.Option(..., help="the rating, e.g. 90 or 4.5 (up to 4 decimals)"),
             tag: str = typer.Option("", help="a tag to filter summaries by (e.g. starred, accurate)"),
             uri: str = typer.Option("", help="where the feedback's details are (e.g. the run's record)"),
             deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
             account: int = typer.Option(0, help="which deployment account rates (not the agent's owner)")) -> None:
    """Leave feedback for an agent on the Reputation contract (its owner and operators cannot)."""
    from decimal import Decimal

    dep = find_deployment(deployment)
    key = account_key(dep, account)
    exact = Decimal(str(score)).normalize()
    decimals = max(0, -int(exact.as_tuple().exponent))
    if decimals > 4:
        raise UsageError(f"--score {score} has {decimals} decimals; at most 4")
    rep = dep.agent_clients(key)[1]
    rep.give(agent_id, int(exact.scaleb(decimals)), decimals, tag, "", "", uri)
    summary = rep.summary(agent_id)
    err.print(f"feedback {exact} for agent {agent_id} from {dep.accounts[account].address}; the agent now has "
              f"{summary.count} feedback, average {summary.average}")


@agent_app.command("pay")
def pay(agent_id: int = typer.Argument(..., min=1, help="the agent whose run is paid for"),
        request: str = typer.Option(..., help="the run's validation request hash (0x and 64 hex digits: what "
                                              "`agent serve` answers as request_hash)"),
        validator: str = typer.Option(..., help="the validator whose pass releases it: an address or an account index"),
        amount: float = typer.Option(..., min=0.0001, help="VRC escrowed"),
        within: int = typer.Option(3600, min=60, help="seconds until the payment, not released, can be refunded"),
        final: bool = typer.Option(True, "--final/--soft", help="release only on a verified:final answer (every "
                                                                "window finalized; the default), or on a soft pass "
                                                                "too (a window still challengeable: paid money "
                                                                "does not come back if it is overturned)"),
        deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
        account: int = typer.Option(0, help="which deployment account pays")) -> None:
    """Escrow a payment for an agent's run on the Collective contract, split among the agents that
    did its work by the verified work the validator attests (``agent release`` pays it)."""
    from decimal import Decimal

    from veracity.agents.validate import VERIFIED_FINAL

    dep = find_deployment(deployment)
    try:
        h = bytes.fromhex(request.removeprefix("0x"))
    except ValueError:
        h = b""
    if len(h) != 32:
        raise UsageError(f"--request {request!r} is not a request hash: 0x and 64 hex digits")
    col = dep.collective_client(account_key(dep, account))
    pid = col.pay(agent_id, h, _validator(dep, validator), int(Decimal(str(amount)) * 10**18), col.chain.now() + within,
                  VERIFIED_FINAL if final else "")
    print(f"payment {pid}")


@agent_app.command("release")
def release(payment_id: int = typer.Argument(..., min=1),
            deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
            account: int = typer.Option(0, help="which deployment account sends it (anyone may)")) -> None:
    """Pay a payment's shares by the split its validator attested (read from its answer on chain);
    after its deadline, give it back to its payer instead."""
    from veracity.agents.tools import vrc
    from veracity.agents.validate import read_split

    dep = find_deployment(deployment)
    key = account_key(dep, account)
    col = dep.collective_client(key)
    p = col.payment(payment_id)
    if p.state_name != "open":
        raise UsageError(f"payment {payment_id} is {p.state_name}: nothing to release")
    if col.chain.now() > p.deadline:
        col.refund(payment_id)
        print(f"payment {payment_id}: its deadline passed; {vrc(p.amount)} went back to {p.payer}")
        return
    val = dep.agent_clients(key)[2]
    answers = val.contract.events.ValidationResponse().get_logs(
        from_block=0, argument_filters={"requestHash": p.request_hash})
    split = read_split(str(answers[-1]["args"]["responseURI"])) if answers else None
    if split is None:
        raise UsageError(f"payment {payment_id}: its validator has not passed the run (no split attested yet): "
                         "try again once `agent validate` answered")
    for agent, payee, amount in col.release(payment_id, *split):
        print(f"agent {agent}: {vrc(amount)} to {payee}")


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
    key = account_key(dep, account)
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
