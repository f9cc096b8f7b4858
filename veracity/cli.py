"""The ``veracity`` command line: one Typer app; errors print as one line, never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from veracity.errors import InputError, UsageError, VeracityError
from veracity.gateway.cli import gateway_app, oracle_app, receipt_app

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Veracity: verifiable AI compute on exact arithmetic.")
err = Console(stderr=True)


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Input records of a local JSONL file (see ``workloads.infer.parse_jsonl``)."""
    from veracity.workloads.infer import parse_jsonl

    if not path.is_file():
        raise InputError(f"input file {path} not found: pass a .jsonl file with one JSON object per line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text: pass a .jsonl file") from None
    return parse_jsonl(text, str(path))


@app.command()
def infer(
    model: str = typer.Argument(..., help="digits-mlp, minilm or tiny-gpt"),
    input: Path = typer.Option(..., "--input", "-i", help="JSONL file, one input per line"),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL file to write results to"),
    backend: str = typer.Option("torch", help="torch (fast), torch-eager or numpy (the int64 reference)"),
    batch_size: int = typer.Option(32, min=1, help="inputs per batch (changes the trace, not outputs)"),
    threads: Optional[int] = typer.Option(None, min=1, help="torch threads (results never change)"),
) -> None:
    """Run an exact model; the last line is `output <hash> trace <root> steps <n>`."""
    from veracity import runtime
    from veracity.exact.execute import BACKENDS
    from veracity.models import registry
    from veracity.workloads.infer import infer as run_infer
    from veracity.workloads.infer import output_lines, parse_items

    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if model not in registry.names():
        raise UsageError(f"unknown model {model!r}: choose one of {', '.join(registry.names())}")
    records = read_jsonl(input)
    if not output.parent.exists():
        raise UsageError(f"output folder {output.parent} does not exist: create it or pick another path")
    runtime.tune_allocator()
    runtime.set_threads(threads)
    with err.status(f"loading {model}"):
        m = registry.load(model)
    items = parse_items(m, records, str(input))
    with Progress(TextColumn(f"[bold]{model}[/] {backend}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("infer", total=len(items))
        result = run_infer(m, items, backend=backend, batch_size=batch_size,
                           progress=lambda done: bar.update(task, completed=done))
    try:
        output.write_text(output_lines(m, records, result), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None
    err.print(f"{len(items)} inputs -> {output} ({result.ops} ops traced)")
    print(f"output {result.output_hash.hex()} trace {result.trace_root.hex()} steps {result.steps}")


@app.command()
def train(
    spec: Path = typer.Argument(..., help="a train or finetune job spec (YAML)"),
    output: Path = typer.Option(..., "--output", "-o", help="where to write the checkpoint"),
    start: Optional[Path] = typer.Option(None, help="a checkpoint file to resume from (a work unit)"),
    steps: Optional[int] = typer.Option(None, min=1, help="run this many steps instead of the spec's (a work unit)"),
    evaluate: Optional[Path] = typer.Option(None, "--eval", help="held-out JSONL to score the checkpoint on"),
    backend: str = typer.Option("torch", help="torch (native kernels when a compiler is present), torch-eager, numpy"),
) -> None:
    """Run a training job here, exactly: the checkpoint a provider would commit, bit for bit. The
    last line is `checkpoint <hash> cid <cid> trace <root> steps <n>`."""
    from veracity.cid import cid_of
    from veracity.workloads.jobs import Job
    from veracity.workloads.spec import load_spec

    job_spec = load_spec(spec)
    if job_spec.training is None:
        raise UsageError(f"{spec} is a job of kind {job_spec.kind!r}: `veracity train` runs train and finetune jobs "
                         "(`veracity infer` runs models)")
    if job_spec.inputs.path is None:
        raise UsageError("veracity train reads its data from inputs.path, not a CID")
    if backend not in ("torch", "torch-eager", "numpy"):
        raise UsageError(f"unknown backend {backend!r}: use torch, torch-eager or numpy")
    if start is not None and not start.is_file():
        raise UsageError(f"start checkpoint {start} not found")
    if not output.parent.exists():
        raise UsageError(f"output folder {output.parent} does not exist: create it or pick another path")
    if steps is not None:
        job_spec = job_spec.model_copy(update={"training": job_spec.training.model_copy(update={"steps": steps})})
    steps = job_spec.training.steps
    job = Job(job_spec, Path(job_spec.inputs.path).read_bytes(), start.read_bytes() if start else None)
    with Progress(TextColumn(f"[bold]{job_spec.model}[/] {job_spec.kind}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("train", total=steps)
        done = [0]

        def step(_: int) -> None:
            done[0] += 1
            bar.update(task, completed=done[0])

        result = job.run(backend, progress=step)
    try:
        output.write_bytes(result.outputs)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None
    err.print(f"{steps} steps -> {output} ({result.ops} records traced)")
    if evaluate is not None:
        if not evaluate.is_file():
            raise UsageError(f"held-out data {evaluate} not found")
        err.print(f"held-out {evaluate.name}: {job.evaluate(result.outputs, evaluate.read_bytes())}")
    print(f"checkpoint {result.output_hash.hex()} cid {cid_of(result.outputs)} trace {result.trace_root.hex()} "
          f"steps {steps}")


@app.command()
def models() -> None:
    """List the exact models this node can run."""
    from veracity.models import registry

    table = Table("model", "what it does")
    for name in registry.names():
        table.add_row(name, registry.describe(name))
    Console().print(table)


@app.command()
def demo(exact: bool = typer.Option(False, "--exact", help="only the exact-inference showcase, no network"),
         threads: int = typer.Option(2, min=1, help="threads for the showcase's fast run")) -> None:
    """The network end to end on a throwaway devnet: jobs of each kind, a spot check, a late provider
    slashed, and every balance before and after. Exits 0 only when every step happened as expected."""
    if exact:
        from veracity.showcase import run_showcase

        ok = run_showcase(Console(), threads)
    else:
        from veracity.demo import run_demo

        ok = run_demo(Console())
    if not ok:
        raise typer.Exit(1)


@app.command()
def plan(params: float = typer.Option(..., help="parameters in matrix multiplies, e.g. 7e9"),
         layers: int = typer.Option(..., min=1), hidden: int = typer.Option(..., min=1),
         seq: int = typer.Option(..., min=1, help="sequence length"),
         tokens: float = typer.Option(..., help="tokens to process (training: tokens seen)"),
         mode: str = typer.Option("infer", help="infer or train"),
         devices: str = typer.Option("1xH100", help="COUNTxNAME, e.g. 8xH100"),
         batch: Optional[int] = typer.Option(None, min=1, help="sequences per global batch (default: 1 to "
                                             "infer, 4M tokens' worth to train)"),
         mfu: float = typer.Option(0.4, min=0.01, max=1.0, help="share of peak FLOPs reached"),
         json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """Estimate FLOPs, memory, parallel split, communication and time for a job on some devices."""
    import json as _json

    from veracity.workloads import planner

    if params <= 0 or tokens <= 0:
        raise UsageError("--params and --tokens must be positive")
    if batch is None:
        batch = 1 if mode == "infer" else max(1, (4 << 20) // seq)
    p = planner.plan(planner.ModelShape(params, layers, hidden, seq), mode, tokens, devices, batch, mfu)  # type: ignore[arg-type]
    if json_out:
        print(_json.dumps(p.to_dict(), indent=2))
        return
    table = Table(title=f"{mode} plan on {devices}", show_header=False)
    table.add_row("FLOPs", f"{p.flops:.3g}")
    table.add_row("memory per device", f"{p.memory_per_device_gb:,.1f} GB" + ("" if p.fits else "  [red](does not fit)[/]"))
    table.add_row("parallel degrees", f"data {p.dp} x tensor {p.tp} x pipeline {p.pp}")
    for k, v in p.comm_gb.items():
        table.add_row(f"communication, {k}", f"{v:,.1f} GB")
    for k, v in p.time_s.items():
        table.add_row(f"time, {k}", planner.duration(v))
    table.add_row("time", f"{planner.duration(p.total_time_s)} (bottleneck: {p.bottleneck})")
    Console().print(table)


devnet_app = typer.Typer(help="The embedded devnet: anvil with Veracity's contracts deployed.",
                         no_args_is_help=True)
app.add_typer(devnet_app, name="devnet")


def _deployment_table(dep: Any, title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_row("RPC URL", dep.rpc_url)
    table.add_row("chain id", str(dep.chain_id))
    for name in ("token", "registry", "market"):
        table.add_row(name.capitalize(), getattr(dep, name))
    table.add_row("accounts", f"{len(dep.accounts)} funded (anvil's development keys; never use them elsewhere)")
    return table


@devnet_app.command("up")
def devnet_up(accounts: int = typer.Option(10, min=2, max=100, help="funded accounts"),
              port: Optional[int] = typer.Option(None, help="RPC port (default: a free one)"),
              providers: int = typer.Option(0, min=0, max=20, help="provider daemons to start"),
              validators: int = typer.Option(0, min=0, max=20, help="validator daemons to start")) -> None:
    """Start anvil on 127.0.0.1, deploy the contracts, fund accounts, start provider/validator daemons."""
    from veracity.chain import devnet
    from veracity.node import launcher

    accounts = max(accounts, launcher.accounts_needed(providers, validators))
    with err.status("starting anvil and deploying the contracts"):
        dep, started = devnet.up(accounts, port)
    if started and (providers or validators):
        with err.status(f"starting {providers} providers and {validators} validators"):
            launcher.launch(dep, providers, validators)
    Console().print(_deployment_table(dep, "devnet up" if started else "devnet already running"))
    table = Table("daemon", "address", "serves at", "pid")
    for d in launcher.daemons():
        table.add_row(d["kind"], d["address"], d["url"], str(d["pid"]))
    if launcher.daemons():
        Console().print(table)
    Console().print(f"deployment file: {devnet.home() / 'deployment.json'}")


@devnet_app.command("down")
def devnet_down() -> None:
    """Stop the devnet started by `veracity devnet up`."""
    from veracity.chain import devnet
    from veracity.node import launcher

    n = launcher.stop_all()
    print(("devnet stopped" if devnet.down() else "no devnet was running") + (f" ({n} daemons stopped)" if n else ""))


@devnet_app.command("status")
def devnet_status() -> None:
    """Show whether the devnet runs, where, and its latest block."""
    from veracity.chain import devnet
    from veracity.chain.client import Chain, TokenClient

    dep = devnet.running()
    if dep is None:
        raise VeracityError("no devnet is running: start one with `veracity devnet up`")
    chain = Chain(dep.rpc_url)
    table = _deployment_table(dep, "devnet running")
    table.add_row("latest block", str(chain._rpc(lambda: chain.w3.eth.block_number)))
    table.add_row("token supply", f"{TokenClient(chain, dep.token).total_supply() / 10**18:,.0f} VRC")
    Console().print(table)


@app.command()
def deploy(rpc_url: str = typer.Option(..., help="any EVM JSON-RPC URL"),
           key: str = typer.Option(..., envvar="VERACITY_DEPLOYER_KEY", help="deployer's private key"),
           out: Path = typer.Option(Path("deployment.json"), help="where to write the deployment file")) -> None:
    """Deploy Veracity's contracts to any EVM chain (no faucet) and write a deployment file."""
    from eth_account import Account

    from veracity.chain import devnet

    try:
        acct = Account.from_key(key)
    except Exception:
        raise UsageError("--key is not a valid private key (64 hex digits)") from None
    me = devnet.AccountInfo(address=acct.address, key=key)
    with err.status(f"deploying to {rpc_url}"):
        dep = devnet.deploy(rpc_url, me, [me], devnet=False)
    dep.write(out)
    Console().print(_deployment_table(dep, f"deployed; wrote {out}"))


provider_app = typer.Typer(help="Run a provider node.", no_args_is_help=True)
app.add_typer(provider_app, name="provider")
validator_app = typer.Typer(help="Run a validator node.", no_args_is_help=True)
app.add_typer(validator_app, name="validator")
job_app = typer.Typer(help="Submit jobs and follow them.", no_args_is_help=True)
app.add_typer(job_app, name="job")
app.add_typer(gateway_app, name="gateway")
app.add_typer(receipt_app, name="receipt")
app.add_typer(oracle_app, name="oracle")


def _run_daemon(kind: str, config: Path, cfg_cls: Any, node_cls: Any) -> None:
    import json as _json

    from pydantic import ValidationError

    if not config.is_file():
        raise UsageError(f"{kind} config {config} not found")
    try:
        cfg = cfg_cls.model_validate(_json.loads(config.read_text()))
    except (ValueError, ValidationError) as exc:
        raise UsageError(f"{config} is not a valid {kind} config: {exc}") from None
    node = node_cls(cfg)
    err.print(f"{kind} {node.chain.address} serving on http://127.0.0.1:{cfg.port}")
    node.serve_forever()


@provider_app.command("run")
def provider_run(config: Path = typer.Option(..., help="provider config (JSON, see veracity.node.provider)")) -> None:
    """Register (if needed), then follow orders, bid, run, commit and serve blobs and bids."""
    from veracity.node.provider import ProviderConfig, ProviderNode

    _run_daemon("provider", config, ProviderConfig, ProviderNode)


@validator_app.command("run")
def validator_run(config: Path = typer.Option(..., help="validator config (JSON, see veracity.node.validator)")) -> None:
    """Register (if needed), then follow commitments and re-execute a sample of them."""
    from veracity.node.validator import ValidatorConfig, ValidatorNode

    _run_daemon("validator", config, ValidatorConfig, ValidatorNode)


def _deployment(path: Optional[Path]) -> Any:
    from veracity.chain import devnet

    p = path or devnet.home() / "deployment.json"
    if not p.is_file():
        raise UsageError(f"no deployment file at {p}: start a devnet (`veracity devnet up`) or pass --deployment")
    return devnet.Deployment.read(p)


@job_app.command("submit")
def job_submit(spec: Path = typer.Argument(..., help="job spec (YAML)"),
               deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
               account: int = typer.Option(1, help="which deployment account pays (devnet)"),
               bid_wait: float = typer.Option(15, help="seconds to wait for bids"),
               provider: Optional[list[str]] = typer.Option(None, "--provider",
                                                            help="only take bids from this provider address (repeatable)"),
               output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                     help="where to write the outputs (default order-N.out.jsonl, "
                                                          "or order-N.ckpt for a train job)"),
               units: int = typer.Option(1, min=1, help="a train job: split it into this many work units, each an "
                                                        "order that resumes from the unit before's checkpoint"),
               accept_unjudged: bool = typer.Option(False, "--accept-unjudged",
                                                    help="order a job no referee judges on chain yet (a fine-tune, "
                                                         "tiny-GPT training): re-executed and compared, but a wrong "
                                                         "result could not be overturned")) -> None:
    """Upload inputs, open the order, pick a bid, wait, fetch and verify the output, settle."""
    from veracity.node.client import check_orderable, submit, submit_units, unit_specs
    from veracity.workloads.spec import load_spec

    job = load_spec(spec)
    check_orderable(job, accept_unjudged)
    dep = _deployment(deployment)
    if not 0 <= account < len(dep.accounts):
        raise UsageError(f"--account must be between 0 and {len(dep.accounts) - 1}")
    if units > 1:
        unit_specs(job, units)  # a spec that cannot split says why before anything is posted
    with err.status("uploading inputs and opening the order") as status:
        labels = {"order": "collecting bids", "match": "provider running the job", "run": "fetching the output",
                  "commit": "waiting out the challenge window", "settle": "settled"}
        only = set(provider) if provider else None
        if units > 1:
            outs = submit_units(job, dep, dep.accounts[account].key, units, bid_wait=bid_wait, only=only,
                                accept_unjudged=accept_unjudged,
                                on_unit=lambda i, o: err.print(f"work unit {i + 1}/{units}: order {o.order_id} "
                                                               f"settled with {o.provider}, checkpoint {o.output_cid}"),
                                on_phase=lambda name: status.update(labels[name]))
        else:
            outs = [submit(job, dep, dep.accounts[account].key, bid_wait=bid_wait,
                           on_phase=lambda name: status.update(labels[name]), only=only,
                           accept_unjudged=accept_unjudged)]
    out = outs[-1]
    table = Table(title=f"order {out.order_id} settled" if units == 1 else
                  f"{units} work units settled (orders {', '.join(str(o.order_id) for o in outs)})", show_header=False)
    table.add_row("provider", out.provider)
    table.add_row("price", f"{out.price / 10**18:g} VRC")
    table.add_row("output", out.output_cid)
    table.add_row("trace root", out.trace_root.hex())
    table.add_row("phases", ", ".join(f"{k} {v:.1f}s" for k, v in out.phases.items()))
    target = output or Path(f"order-{out.order_id}." + ("ckpt" if job.kind == "train" else "out.jsonl"))
    target.write_bytes(out.outputs)
    what = "checkpoint" if job.kind == "train" else "outputs"
    table.add_row(what, f"{target} (bytes verified against the committed CID and trace)")
    Console().print(table)


@job_app.command("estimate")
def job_estimate(spec: Path = typer.Argument(..., help="job spec (YAML)"),
                 devices: list[str] = typer.Option(["1xCPU"], "--devices",
                                                   help="COUNTxNAME to estimate for (repeatable), e.g. 8xH100"),
                 mfu: float = typer.Option(0.05, help="share of peak the exact run reaches (CPU NumPy: a few %)")) -> None:
    """What a job costs before you post it: FLOPs, memory and time on each set of devices (the
    planner, from the job's own shapes; providers run the same estimate before they bid)."""
    from veracity.workloads.jobs import Job
    from veracity.workloads.planner import duration, estimate_job, human
    from veracity.workloads.spec import load_spec

    job_spec = load_spec(spec)
    if job_spec.inputs.path is None:
        raise UsageError("estimate reads the inputs from a local path (inputs.path), not a CID")
    if job_spec.training is not None and job_spec.training.start is not None:
        raise UsageError("estimate a work unit from its own steps: drop training.start (the estimate does not "
                         "depend on it)")
    est = estimate_job(Job(job_spec, Path(job_spec.inputs.path).read_bytes()))
    table = Table("devices", "FLOPs", "memory", "fits", f"time at {mfu:.0%} of peak",
                  title=f"{job_spec.kind} {job_spec.model}: {est.detail}")
    for d in devices:
        table.add_row(d, human(est.flops), human(est.memory_bytes, "B"), "yes" if est.fits(d) else "no",
                      duration(est.seconds(d, mfu)))
    Console().print(table)


def _order_row(o: Any) -> list[str]:
    provider = o.provider if int(o.provider, 16) else "-"
    return [str(o.order_id), o.state_name, f"{o.max_price / 10**18:g}", f"{o.price / 10**18:g}" if o.price else "-",
            provider, ("0x" + o.trace_root.hex()[:16]) if any(o.trace_root) else "-"]


@job_app.command("status")
def job_status(order_id: int = typer.Argument(..., help="the order id `job submit` printed"),
               deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)")) -> None:
    """Show one order's state on-chain."""
    dep = _deployment(deployment)
    _, _, _, market = dep.clients(dep.deployer.key)
    if not 1 <= order_id <= market.fn.order_count().call():
        raise UsageError(f"there is no order {order_id} on this chain")
    table = Table("order", "state", "max price", "price", "provider", "trace root")
    table.add_row(*_order_row(market.order(order_id)))
    Console().print(table)


@job_app.command("list")
def job_list(deployment: Optional[Path] = typer.Option(None, help="deployment file (default: the devnet's)"),
             account: Optional[int] = typer.Option(None, help="only this deployment account's orders")) -> None:
    """List the orders on-chain (newest first)."""
    dep = _deployment(deployment)
    _, _, _, market = dep.clients(dep.deployer.key)
    who = dep.accounts[account].address if account is not None else None
    table = Table("order", "state", "max price", "price", "provider", "trace root")
    for oid in range(market.fn.order_count().call(), 0, -1):
        o = market.order(oid)
        if who is None or o.client == who:
            table.add_row(*_order_row(o))
    Console().print(table if table.row_count else "no orders yet")


def main() -> None:
    try:
        app(standalone_mode=True)
    except VeracityError as exc:
        print(f"error: {exc}", file=sys.stderr)  # one line, never wrapped
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
