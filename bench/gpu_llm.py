"""SmolLM2 on a GPU: the same output hash and trace root as the CPU's int64 reference, and the
decode speed. Runs where torch sees a CUDA device (the device machine); elsewhere it runs the CPU
backends only and says so. The torch-eager backend's Llama ops run on CUDA as they do on CPU:
float GEMMs on integer operands whose partial sums stay exact (float32 for 4-bit quants' per-block
dots, float64 for scores and context), int64 for the rest.

    python bench/gpu_llm.py --json $OUT/gpu_llm.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import write_json  # bench/_common.py (the script folder is on sys.path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tokens", type=int, default=8)
    args = ap.parse_args()
    import torch

    from veracity.exact.execute import Exec, make_backend
    from veracity.exact.trace import Trace
    from veracity.models.registry import load

    model = load("smollm2")
    item = model.parse({"messages": [{"role": "user", "content": "What is the capital of France?"}],
                        "max_tokens": args.tokens})
    runs = [("numpy", "cpu"), ("torch-eager", "cpu"), ("torch", "cpu")]
    if torch.cuda.is_available():
        runs.append(("torch-eager", "cuda"))
    else:
        print("no CUDA device here: CPU backends only")
    results = {}
    for backend, device in runs:
        trace = Trace()
        ex = Exec(make_backend(backend, device), trace)
        t = time.perf_counter()
        out = model.run(ex, [item])[0]
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
        root = trace.root().hex()
        trace.close()
        results[f"{backend}@{device}"] = {"tokens": out.tolist(), "trace_root": root, "wall_s": wall,
                                          "tok_s": args.tokens / wall}
        print(f"{backend:12s} {device:5s} {wall:7.2f}s  {args.tokens / wall:6.2f} tok/s (traced)  root {root[:16]}")
    roots = {r["trace_root"] for r in results.values()}
    same = len(roots) == 1 and len({json.dumps(r["tokens"]) for r in results.values()}) == 1
    print("same bits on every backend and device:", same)
    write_json(args.json, {"same_bits": same, "cuda": torch.cuda.is_available(), "runs": results})
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
