"""Exact training against float32 training, side by side on this machine.

The digits MLP (64 -> 128 -> 64 -> 10), SGD with momentum, batch 32, the same initial weights and
data order: the time of one optimizer step, exact (the NumPy int64 backend and torch's float32
GEMMs on int8 operands) and float32 (torch with autograd), interleaved and the median taken; and
the held-out accuracy each reaches after 12 epochs. The MiniLM LoRA fine-tune is not built yet
(``train_ratio_lora`` is absent until it is).

    python bench/train.py --json bench/results/train.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import write_json  # bench/_common.py (the script folder is on sys.path)
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_digits

from veracity.exact import train as T


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    d = load_digits()
    perm = np.random.Generator(np.random.PCG64(1)).permutation(len(d.target))
    x, y = d.data.astype(np.int64), d.target.astype(np.int64)
    xs, ys, xt, yt = x[perm[:1437]], y[perm[:1437]], x[perm[1437:]], y[perm[1437:]]
    cfg = T.SGDConfig()
    start = T.MLPState.init()
    steps = 50
    runs: dict[str, list[float]] = {"exact (numpy)": [], "exact (torch)": [], "float32 (torch)": []}
    T.train(start, xs, ys, 3, cfg, "torch")
    T.train_float(start, xs, ys, 3, cfg)
    for _ in range(args.repeats):  # interleaved, so load on the machine hits all alike
        for name in runs:
            t = time.perf_counter()
            if name.startswith("float"):
                T.train_float(start, xs, ys, steps, cfg)
            else:
                T.train(start, xs, ys, steps, cfg, "numpy" if "numpy" in name else "torch")
            runs[name].append((time.perf_counter() - t) / steps)
    step = {k: float(np.median(v)) for k, v in runs.items()}
    epochs = 12 * -(-len(ys) // cfg.batch)
    acc_exact = float((T.predict(T.train(start, xs, ys, epochs, cfg), xt) == yt).mean())
    acc_float = float((T.predict_float(T.train_float(start, xs, ys, epochs, cfg), xt) == yt).mean())
    best_exact = min(step["exact (numpy)"], step["exact (torch)"])
    ratio = best_exact / step["float32 (torch)"]
    table = Table("digits MLP, batch 32", "ms per step", "/ float32", title="exact training vs float32 (this CPU)")
    for k, v in step.items():
        table.add_row(k, f"{v * 1e3:.2f}", f"{v / step['float32 (torch)']:.2f}")
    console = Console(width=110)
    console.print(table)
    console.print(f"held-out accuracy after 12 epochs: exact {acc_exact:.4f}, float32 {acc_float:.4f}; "
                  f"train_ratio_mlp {ratio:.2f} (the faster exact backend)")
    result = {"train_ratio_mlp": ratio, "acc_exact": acc_exact, "acc_float": acc_float,
              "step_s": step, "train_ratio_lora": None,
              "train_ratio_lora_note": "the MiniLM LoRA fine-tune is not built yet"}
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
