"""Exact training against float32 training, side by side on this machine.

The digits MLP (64 -> 128 -> 64 -> 10), SGD with momentum, batch 32, the same initial weights and
data order: the time of one optimizer step, exact (the NumPy int64 backend; torch-eager, torch's
float32 GEMMs on int8 operands; and torch, which like inference uses ``native.c``'s fused kernels
when a C compiler is present: quantize-GEMM-rescale, the update, the LayerNorm) and float32
(torch with autograd, the same optimizer), interleaved and the median taken; and
the held-out accuracy each reaches after 12 epochs.

The MiniLM LoRA fine-tune (rank 8 on the last layer's FFN down-projection, and the head; Adam,
batch 16, on the shipped reviews): the step time exact vs float32 torch with autograd, both on the
frozen encoder's features computed once (the exact ones by the exact encoder), the float32 run
with the same Adam (no bias correction) and the adapter's lower learning rate, and the held-out
accuracy after 500 steps of LoRA, of the head alone, and of the float32 LoRA.

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

from veracity.exact import integer as X
from veracity.models.registry import loaded
from veracity.training import lora as F
from veracity.training import mlp as MLP

INPUTS = Path(__file__).resolve().parent.parent / "examples" / "inputs"


def lora(repeats: int) -> dict[str, float]:
    import json

    model = loaded("minilm")
    norm = model.layers[-1].ln2
    rows = {n: [json.loads(line) for line in (INPUTS / f"reviews-{n}.jsonl").read_text().splitlines()]
            for n in ("train", "heldout")}
    feats = {n: F.features(model, [r["text"] for r in rs]) for n, rs in rows.items()}
    labels = {n: np.array([r["label"] for r in rs]) for n, rs in rows.items()}
    cfg = X.SGDConfig(lr_num=655, batch=16, seed=1, optimizer="adam")
    start = F.LoraState.init(8, 2)
    steps = 40
    runs: dict[str, list[float]] = {"exact (numpy)": [], "exact (torch-eager)": [], "exact (torch)": [],
                                    "float32 (torch)": []}
    F.finetune(start, feats["train"], labels["train"], norm.gamma, norm.beta, 3, cfg, "torch", lora_lr_shift=2)
    for _ in range(repeats):
        for name in runs:
            t = time.perf_counter()
            if name.startswith("float"):
                F.finetune_float(start, feats["train"], labels["train"], norm.gamma, norm.beta, steps, cfg,
                                 lora_lr_shift=2)
            else:
                F.finetune(start, feats["train"], labels["train"], norm.gamma, norm.beta, steps, cfg,
                           name[7:-1], lora_lr_shift=2)
            runs[name].append((time.perf_counter() - t) / steps)
    out = {f"lora {k}": float(np.median(v)) for k, v in runs.items()}
    held = feats["heldout"]
    for rank in (0, 8):
        st = F.finetune(F.LoraState.init(rank, 2), feats["train"], labels["train"], norm.gamma, norm.beta, 500, cfg,
                        "torch", lora_lr_shift=2)
        out[f"acc rank {rank}"] = float((F.predict(st, held, norm.gamma, norm.beta) == labels["heldout"]).mean())
    _, predict = F.finetune_float(start, feats["train"], labels["train"], norm.gamma, norm.beta, 500, cfg,
                                  lora_lr_shift=2)
    out["acc float"] = float((predict(held) == labels["heldout"]).mean())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    d = load_digits()
    perm = np.random.Generator(np.random.PCG64(1)).permutation(len(d.target))
    x, y = d.data.astype(np.int64), d.target.astype(np.int64)
    xs, ys, xt, yt = x[perm[:1437]], y[perm[:1437]], x[perm[1437:]], y[perm[1437:]]
    cfg = X.SGDConfig()
    start = MLP.MLPState.init()
    steps = 50
    runs: dict[str, list[float]] = {"exact (numpy)": [], "exact (torch-eager)": [], "exact (torch)": [],
                                    "float32 (torch)": []}
    MLP.train(start, xs, ys, 3, cfg, "torch")
    MLP.train(start, xs, ys, 3, cfg, "torch-eager")
    MLP.train_float(start, xs, ys, 3, cfg)
    for _ in range(args.repeats):  # interleaved, so load on the machine hits all alike
        for name in runs:
            t = time.perf_counter()
            if name.startswith("float"):
                MLP.train_float(start, xs, ys, steps, cfg)
            else:
                MLP.train(start, xs, ys, steps, cfg, name[7:-1])
            runs[name].append((time.perf_counter() - t) / steps)
    step = {k: float(np.median(v)) for k, v in runs.items()}
    epochs = 12 * -(-len(ys) // cfg.batch)
    acc_exact = float((MLP.predict(MLP.train(start, xs, ys, epochs, cfg), xt) == yt).mean())
    acc_float = float((MLP.predict_float(MLP.train_float(start, xs, ys, epochs, cfg), xt) == yt).mean())
    best_exact = min(v for k, v in step.items() if k.startswith("exact"))
    ratio = best_exact / step["float32 (torch)"]
    lo = lora(args.repeats)
    best_lora = min(v for k, v in lo.items() if k.startswith("lora exact"))
    ratio_lora = best_lora / lo["lora float32 (torch)"]
    table = Table("job", "step", "ms per step", "/ float32", title="exact training vs float32 (this CPU)")
    for k, v in step.items():
        table.add_row("digits MLP, batch 32", k, f"{v * 1e3:.2f}", f"{v / step['float32 (torch)']:.2f}")
    for k in ("exact (numpy)", "exact (torch-eager)", "exact (torch)", "float32 (torch)"):
        v = lo[f"lora {k}"]
        table.add_row("MiniLM LoRA r=8, batch 16", k, f"{v * 1e3:.2f}", f"{v / lo['lora float32 (torch)']:.2f}")
    console = Console(width=110)
    console.print(table)
    console.print(f"digits MLP, held-out accuracy after 12 epochs: exact {acc_exact:.4f}, float32 {acc_float:.4f}; "
                  f"train_ratio_mlp {ratio:.2f} (the faster exact backend)")
    console.print(f"MiniLM reviews, held-out accuracy after 500 steps: exact LoRA {lo['acc rank 8']:.4f}, exact "
                  f"head only {lo['acc rank 0']:.4f}, float32 LoRA {lo['acc float']:.4f}; "
                  f"train_ratio_lora {ratio_lora:.2f}")
    result = {"train_ratio_mlp": ratio, "acc_exact": acc_exact, "acc_float": acc_float,
              "step_s": step, "train_ratio_lora": ratio_lora,
              "lora": {"step_s": {k.removeprefix("lora "): v for k, v in lo.items() if k.startswith("lora")},
                       "acc_exact_lora": lo["acc rank 8"], "acc_exact_head_only": lo["acc rank 0"],
                       "acc_float_lora": lo["acc float"]}}
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
