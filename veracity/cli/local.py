"""Commands that run here, without a network: ``infer``, ``train``, ``models``, ``plan``, ``demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from veracity.cli.app import app, err
from veracity.errors import InputError, UsageError


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
    training, path = job_spec.training, job_spec.inputs.path
    if steps is not None:
        training = training.model_copy(update={"steps": steps})
        job_spec = job_spec.model_copy(update={"training": training})
    steps = training.steps
    job = Job(job_spec, Path(path).read_bytes(), start.read_bytes() if start else None)
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
         threads: int = typer.Option(2, min=1, help="threads for the showcase's fast run"),
         keep: bool = typer.Option(False, "--keep", help="leave the devnet and its explorer running after the "
                                                         "story, until Ctrl-C")) -> None:
    """The network end to end on a throwaway devnet: jobs of each kind, a spot check, a late provider
    slashed, and every balance before and after. Exits 0 only when every step happened as expected."""
    if exact:
        from veracity.cli.showcase import run_showcase

        ok = run_showcase(Console(), threads)
    else:
        from veracity.cli.demo import run_demo

        ok = run_demo(Console(), keep)
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

