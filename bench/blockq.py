"""The block-quantized linear (``exact.blockq``) on SmolLM2-135M's matrices: numpy, torch and
native backends, at T=1 (one decode step) and T=37 (a chat prompt's prefill).

Runs alternate between backends (median of repeats), so the ratios hold on a shared, noisy
machine; each run takes the next matrix of its shape, all 30 blocks' in turn, so the weights come
from memory, not cache, as in decoding (the head is one matrix of 31 MB). Results are checked
equal to the numpy reference's (numpy runs once per case where it takes over 50 ms). The last
rows add up one pass's linears: 30 blocks of (q, k, v, o, gate, up, down) and the head.
Prints a table and writes JSON (``--json PATH``).

    python bench/blockq.py --json bench/results/blockq.json
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
from _common import write_json  # bench/_common.py (the script folder is on sys.path)

SHAPES = {  # a shape's matrices in the GGUF (each decode token reads every one once)
    "q, o": ["attn_q", "attn_output"],  # 576x576
    "k, v": ["attn_k", "attn_v"],  # 192x576
    "gate, up": ["ffn_gate", "ffn_up"],  # 1536x576
    "down": ["ffn_down"],  # 576x1536
    "head": [],  # token_embd, 49152x576 Q8_0 (tied)
}


def interleaved(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per run, the candidates alternating so drift hits all of them alike, in a new
    order each round (a run after torch's, which sweeps the caches with float32 weights, is slower)."""
    for fn in runs.values():
        fn()  # warm up
    samples: dict[str, list[float]] = {k: [] for k in runs}
    order = random.Random(0)
    for _ in range(repeats):
        for k in order.sample(list(runs), len(runs)):
            fn = runs[k]
            t = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=lambda v: [int(x) for x in v.split(",")], default=[1, 37])
    ap.add_argument("--time", type=float, default=0.3, help="seconds of runs per backend and case (about)")
    args = ap.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from veracity.exact import blockq, ops_native, spec
    from veracity.exact.llm import BlockWeights
    from veracity.exact.ops_torch import TorchBackend
    from veracity.models.gguf import read_gguf, smollm2_path

    torch.set_num_threads(args.threads)
    console = Console(width=140)
    f = read_gguf(smollm2_path())
    rng = np.random.default_rng(0)
    backends = ("numpy", "torch", "native", "native_1t")
    prepared: dict[str, dict[str, Any]] = {"torch": {}, "native": {}}
    rows: list[dict[str, Any]] = []

    torch_backend = TorchBackend()

    def call(backend: str, t: Any, x: np.ndarray) -> Any:
        if backend == "numpy":
            return blockq.block_linear(x, t.q, t.d, t.m, 12, 12, spec.ACT_MAX)
        if backend == "torch":  # the torch backend's op (float GEMMs for the dots, int64 weighting)
            return torch_backend.block_linear(torch.from_numpy(x)[None], prepared["torch"][t.name], 12,
                                              spec.ACT_MAX)[0].numpy()
        return ops_native.block_linear(x, t.q, t.d, t.m, 12, 12, spec.ACT_MAX, prepared["native"][t.name],
                                       nt=1 if backend == "native_1t" else None)

    xs = {(tokens, k): np.round(rng.normal(scale=2.0, size=(tokens, k)) * (1 << 12)).astype(np.int64)
          for tokens in args.tokens for k in (576, 1536)}
    for shape, names in SHAPES.items():
        ts: list[Any] = [f.tensors[f"blk.{i}.{n}.weight"] for i in range(30) for n in names]
        ts = ts or [f.tensors["token_embd.weight"]]
        for t in ts:
            blockq.check_range(t.q, t.d, t.m)
            prepared["torch"][t.name] = BlockWeights(t.q, t.d, t.m, t.name)
            prepared["native"][t.name] = ops_native.pack_blocks(t.q, t.d, t.m)
        for tokens in args.tokens:
            x = xs[tokens, ts[0].q.shape[1]]
            checked = ts if tokens == 1 else ts[:2]
            t0 = time.perf_counter()
            refs = [call("numpy", t, x) for t in checked]
            numpy_once = (time.perf_counter() - t0) / len(checked)
            same = all(np.array_equal(call(b, t, x), ref) for t, ref in zip(checked, refs) for b in backends[1:])
            turns = {b: j * len(ts) // len(backends) for j, b in enumerate(backends)}  # apart: no backend

            def run(b: str, x: np.ndarray = x, ts: list[Any] = ts, turns: dict[str, int] = turns) -> Any:
                turns[b] = (turns[b] + 1) % len(ts)  # reads what another just read
                return call(b, ts[turns[b]], x)

            runs: dict[str, Callable[[], Any]] = {b: partial(run, b) for b in backends
                                                  if b != "numpy" or numpy_once < 0.05}
            reps = max(3, min(300, int(args.time / max(interleaved(runs, 1).values()))))
            ms = {k: v * 1e3 for k, v in interleaved(runs, reps).items()}
            ms.setdefault("numpy", numpy_once * 1e3)
            packed = prepared["native"][ts[0].name].rec.nbytes
            rows.append({"matrices": shape, "kind": ts[0].kind, "shape": list(ts[0].q.shape), "count": len(ts),
                         "T": tokens, "repeats": reps, **{f"{k}_ms": v for k, v in ms.items()}, "equal": same,
                         "native_vs_torch": ms["torch"] / ms["native"],
                         "native_GBps": packed / (ms["native"] * 1e-3) / 1e9, "packed_bytes": packed})

    # one pass in the model's order: every matrix once, from memory (112 MB packed, past any cache)
    order: list[Any] = [f.tensors[f"blk.{i}.{n}.weight"] for i in range(30) for n in
             ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")]
    order.append(f.tensors["token_embd.weight"])
    passes: dict[int, dict[str, float]] = {}

    def one_pass(b: str, tokens: int) -> list[Any]:
        return [call(b, t, xs[tokens, t.q.shape[1]]) for t in order]

    for tokens in args.tokens:
        runs = {b: partial(one_pass, b, tokens) for b in backends[1:]}
        repeats = max(3, int(args.time * 10)) if tokens == 1 else 3
        passes[tokens] = {k: v * 1e3 for k, v in interleaved(runs, repeats).items()}
        passes[tokens]["numpy"] = sum(r["numpy_ms"] * r["count"] for r in rows if r["T"] == tokens)

    table = Table(title=f"block_linear, {args.threads} threads (ms, median)")
    for col in ["matrices", "kind", "N x K", "T", "numpy", "torch", "native", "native 1t", "torch/native",
                "native GB/s", "equal"]:
        table.add_column(col, justify="left" if col in ("matrices", "kind") else "right")
    for r in rows:
        table.add_row(f"{r['matrices']} ({r['count']})", r["kind"], "x".join(map(str, r["shape"])), str(r["T"]),
                      f"{r['numpy_ms']:.3f}", f"{r['torch_ms']:.3f}", f"{r['native_ms']:.3f}",
                      f"{r['native_1t_ms']:.3f}", f"{r['native_vs_torch']:.1f}x", f"{r['native_GBps']:.1f}",
                      str(r["equal"]))
    total = sum(r["packed_bytes"] * r["count"] for r in rows if r["T"] == args.tokens[0])
    for tokens, p in passes.items():
        table.add_row("one pass, in order (211)", "", "", str(tokens), f"{p['numpy']:.0f}*", f"{p['torch']:.1f}",
                      f"{p['native']:.1f}", f"{p['native_1t']:.1f}", f"{p['torch'] / p['native']:.1f}x",
                      f"{total / (p['native'] * 1e-3) / 1e9:.1f}", "")
    console.print(table)
    console.print("* numpy's pass is the sum of its rows. Each row's runs take that shape's matrices in turn.")
    write_json(args.json, {"threads": args.threads, "rows": rows, "pass_ms": {str(k): v for k, v in passes.items()},
                           "packed_bytes_per_pass": total, "all_equal": all(r["equal"] for r in rows)})
    return 0 if all(r["equal"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
