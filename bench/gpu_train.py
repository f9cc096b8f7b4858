"""Exact training on a GPU: the same checkpoint bits as the CPU's int64 reference, and the step time.

Runs where torch sees a CUDA device (the device machine; no MiniLM weights there, so the LoRA
step runs on synthetic frozen features of MiniLM's shapes). For each job: the CPU NumPy int64
run, the CPU torch float32 run and the CUDA float32 run, their checkpoint hashes (which must be
equal) and ms per step.

    python bench/gpu_train.py --json $OUT/gpu_train.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import write_json  # bench/_common.py (the script folder is on sys.path)

from veracity.exact import integer as X
from veracity.training import lora as F
from veracity.training import mlp as MLP


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.int64), d.target.astype(np.int64)


def synthetic_features(sentences: int = 256, seed: int = 0) -> tuple[F.Features, np.ndarray]:
    """Integer features of MiniLM's shapes (residual 384, GELU 1536; 6..24 tokens a sentence)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    lens = rng.integers(6, 25, sentences)
    n = int(lens.sum())
    res = rng.integers(-(3 << 12), 3 << 12, (n, 384))
    u = np.maximum(rng.integers(-(1 << 8), 4 << 8, (n, 1536)), -40)
    labels = (res[np.cumsum(lens) - 1, 0] > 0).astype(np.int64)
    return F.Features(res, u, np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)), labels


def run(name: str, fn, backends: list[str]) -> dict[str, dict[str, float | str]]:
    out = {}
    for b in backends:
        fn(b, 2)  # warm-up
        t = time.perf_counter()
        digest, steps = fn(b, None)
        out[b] = {"hash": digest.hex(), "ms_per_step": (time.perf_counter() - t) / steps * 1e3}
        print(f"{name:>12} {b:>6}: {out[b]['ms_per_step']:8.2f} ms/step  checkpoint {digest.hex()[:16]}", flush=True)
    return out


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    backends = ["numpy", "torch"] + (["cuda"] if torch.cuda.is_available() else [])
    print("device:", torch.cuda.get_device_name(0) if "cuda" in backends else "no CUDA device", flush=True)
    x, y = digits()

    def mlp(backend: str, steps: int | None) -> tuple[bytes, int]:
        n = steps or 120
        state = MLP.train(MLP.MLPState.init(), x, y, n, X.SGDConfig(seed=1), backend)
        return MLP.checkpoint_hash(state), n

    feats, labels = synthetic_features()
    gamma = np.full(384, 3 << 14, dtype=np.int64)
    beta = np.zeros(384, dtype=np.int64)

    def lora(backend: str, steps: int | None) -> tuple[bytes, int]:
        n = steps or 60
        cfg = X.SGDConfig(lr_num=655, batch=16, seed=1, optimizer="adam")
        state = F.finetune(F.LoraState.init(8, 2), feats, labels, gamma, beta, n, cfg, backend, lora_lr_shift=2)
        return F.checkpoint_hash(state), n

    result = {"digits_mlp": run("digits MLP", mlp, backends), "lora_step": run("LoRA r=8", lora, backends)}
    same = all(len({v["hash"] for v in r.values()}) == 1 for r in result.values())
    result["bit_identical"] = same
    print("every backend gave the same checkpoint bits:", same)
    write_json(args.json, result)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
