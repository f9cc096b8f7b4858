"""``veracity demo --exact``: the exact-inference showcase, on this machine alone.

For each model it runs the example inputs four ways (the fast torch backend with N threads and
with 1 thread, plain eager torch, the int64 NumPy reference), shows that output hashes and trace roots are identical, and
compares quality with the float model. Returns True only when every check held.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from veracity import runtime
from veracity.models import registry
from veracity.workloads.infer import InferResult, infer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "inputs"  # shipped in the package


SHORT = {"smollm2": [{"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 8}]}


def _examples(name: str) -> list[dict]:
    """The model's example inputs (the chat LLM: one short question, as the int64 reference runs it too)."""
    if name in SHORT:
        return SHORT[name]
    path = EXAMPLES / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _quality(name: str, model: Any, records: list[dict], result: InferResult) -> str:
    """One line comparing the exact outputs with the float model's."""
    import torch

    if name == "digits-mlp":
        from veracity.models import mlp
        from veracity.models.weights import load_safetensors

        fm = mlp.float_mlp()
        fm.load_state_dict({k: torch.tensor(v, dtype=torch.float32)
                            for k, v in load_safetensors(mlp.WEIGHTS).items()})
        data = mlp.digits_split()
        from veracity.exact.execute import Exec, make_backend

        acc_e = float((model.predict(Exec(make_backend("torch")), data["x_test"]) == data["y_test"]).mean())
        acc_f = mlp.float_accuracy(fm, data["x_test"], data["y_test"])
        return f"test accuracy exact {acc_e:.1%} vs float {acc_f:.1%} (450 held-out digits)"
    if name == "minilm":
        from veracity.models.encoder import float_bert

        bert = float_bert()
        cos = []
        for rec, out in zip(records, result.outputs):
            ids = torch.tensor([model.tokenizer.encode(rec["text"]).ids])
            with torch.no_grad():
                ref = bert(input_ids=ids).last_hidden_state[0].mean(0).double().numpy()
            e = out / 32768.0
            cos.append(float(e @ ref / np.linalg.norm(e) / np.linalg.norm(ref)))
        return f"cosine to the float model: min {min(cos):.4f}, mean {np.mean(cos):.4f}"
    texts = [model.present(o) for o in result.outputs]
    if name == "smollm2":  # greedy: the float reference's answer token for token (bench/llm.py: 8 of 8 prompts)
        return "answered: " + " | ".join(f"{rec['messages'][-1]['content']!r} -> {t['text']!r}"
                                         for rec, t in zip(records, texts))
    return "generated: " + " | ".join(repr(rec["text"] + t) for rec, t in zip(records, texts))


def run_showcase(console: Console, threads: int = 2) -> bool:
    runtime.tune_allocator()
    if console.width < 124 and not console.is_terminal:
        console.width = 124
    console.rule("[bold]Veracity: exact inference[/] - same model + same data = same bits")
    table = Table("model", "inputs", "steps", "ops", "output hash", "trace root", "bit-identical runs", "time")
    notes, ok = [], True
    for name in registry.names():
        model = registry.load(name)
        records = _examples(name)
        items = [model.parse(r) for r in records]
        runs: dict[str, InferResult] = {}
        t0 = time.perf_counter()
        for label, backend, n in [("fast", "torch", threads), ("one", "torch", 1), ("eager", "torch-eager", None),
                                  ("ref", "numpy", None)]:
            runtime.set_threads(n or threads)
            runs[label] = infer(model, items, backend=backend, batch_size=8)
        runtime.set_threads(threads)
        elapsed = time.perf_counter() - t0
        base = runs["fast"]
        names = {"fast": f"native {threads}T", "one": "native 1T", "eager": "torch eager", "ref": "numpy"}
        differ = [names[k] for k in ("one", "eager", "ref")
                  if (runs[k].output_hash, runs[k].trace_root) != (base.output_hash, base.trace_root)]
        ok &= not differ
        verdict = (f"[green]{' = '.join(names.values())}[/]" if not differ
                   else f"[red]{', '.join(differ)} DIFFER[/]")
        table.add_row(name, str(len(items)), str(base.steps), str(base.ops), base.output_hash.hex()[:12],
                      base.trace_root.hex()[:12], verdict, f"{elapsed:.1f}s")
        notes.append((name, _quality(name, model, records, base)))
    console.print(table)
    for name, line in notes:
        console.print(f"[bold]{name}[/]: {line}", highlight=False)
    console.print("[green]every run gave identical bits[/]" if ok else "[red]runs disagreed[/]")
    return ok
