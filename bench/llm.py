"""SmolLM2-135M-Instruct in exact integers against the float reference of the same GGUF file, and
against llama.cpp: quality and speed, in one process, the same threads, interleaved runs.

Quality (``models.llama.ExactLlama`` vs transformers loading the GGUF, dequantized, float32):
teacher-forced top-1 next-token agreement on the project's own held-out text, perplexity of both
on it, and the share of chat prompts whose first 16 greedy tokens are the float reference's.
Speed: prefill and decode tokens/s (greedy, 64 tokens after a 37-token chat prompt) for exact,
transformers float32 and llama.cpp (``llama-cpp-python``, if it is installed: ``pip install
llama-cpp-python`` builds it from source, which takes minutes; without it the bench says so).
Traced: the coarse trace a provider commits (``exact.levels``: the records a later step reads) hashed
while it decodes; "every op traced": every op's output hashed, as a single-level trace would.

    python bench/llm.py --json bench/results/llm.json
    python bench/llm.py --quick   # llm_trace_overhead alone: exact decode, untraced against traced
    python bench/llm.py --quick --repeats 15   # (its median steadier on a busy machine)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_json  # bench/_common.py (the script folder is on sys.path)

HELD_OUT = [
    "Exact arithmetic gives the same bits on any machine, so checking a result is hash equality. A provider "
    "commits the trace of its run on chain, and a validator re-executes a sample of the jobs to compare.",
    "The history of the Roman Empire spans many centuries. It began when Augustus became the first emperor "
    "in 27 BC and ended in the west in 476 AD, when the last emperor was deposed.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "Water boils at one hundred degrees Celsius at sea level. At higher altitudes the air pressure is lower, "
    "so water boils at a lower temperature, and cooking takes longer.",
]
PROMPTS = ["What is the capital of France?", "Name three primary colors.", "What does a validator do?",
           "Write a haiku about the sea.", "How many legs does a spider have?", "What is 12 times 12?",
           "Give me a word that rhymes with cat.", "Why is the sky blue?"]


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def exact_run(exact: Any, prompt: list[int], steps: int, traced: str | None = None) -> tuple[float, float]:
    """Prefill, then ``steps`` greedy tokens, each read back (as a client streaming it would): prefill
    and decode tokens/s. traced "coarse": the coarse trace a provider commits (``exact.levels``),
    "full": every op's output hashed; all hashes finished before the clock stops."""
    from veracity.exact.execute import Exec, make_backend
    from veracity.exact.trace import Trace
    from veracity.models.llama import Decoder

    trace = Trace() if traced else None
    ex = Exec(make_backend("torch"), trace, coarse=traced == "coarse")
    dec = Decoder(exact, ex)
    t = time.perf_counter()
    token = dec.next_token(ex.index(np.array([prompt])))
    ex.to_numpy(token)
    pre = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        token = dec.next_token(token)
        ex.to_numpy(token)
    if trace is not None:
        trace.records  # noqa: B018  (waits for the background hashes)
        trace.close()
    return len(prompt) / pre, steps / (time.perf_counter() - t)


def trace_overhead(untraced: list[float], traced: list[float]) -> float:
    """``llm_trace_overhead``: the median over repeats of traced decode time over untraced, each pair
    run back to back (decode tok/s in, in run order). On a shared machine the pairs' own ratios
    cancel what drifts between them; the ratio of the medians moved by several percent with the
    load."""
    return float(np.median([u / t for u, t in zip(untraced, traced)]))


def quick(args: argparse.Namespace) -> int:
    """``llm_trace_overhead`` alone: exact decode untraced and traced (coarse), in pairs back to back
    (which runs first alternating), medians."""
    import torch

    from veracity.models.gguf import smollm2_path
    from veracity.models.llama import ExactLlama

    torch.set_num_threads(args.threads)
    exact = ExactLlama.from_gguf(smollm2_path())
    prompt = exact.tokenizer.encode(exact.template.render([{"role": "user", "content": PROMPTS[0]}]))
    runs: dict[str, list[float]] = {"exact": [], "exact traced": []}
    for r in range(args.repeats):
        for traced in ((None, "coarse") if r % 2 == 0 else ("coarse", None)):
            runs["exact traced" if traced else "exact"].append(exact_run(exact, prompt, args.decode_tokens, traced)[1])
    speed = {k: float(np.median(v)) for k, v in runs.items()}
    result = {"llm_decode_tok_s_exact": speed["exact"], "llm_decode_tok_s_traced": speed["exact traced"],
              "llm_trace_overhead": trace_overhead(runs["exact"], runs["exact traced"]), "threads": args.threads,
              "prompt_tokens": len(prompt), "decode_tokens": args.decode_tokens, "repeats": args.repeats}
    print(f"decode tok/s: exact {speed['exact']:.1f}, traced {speed['exact traced']:.1f}; llm_trace_overhead "
          f"{result['llm_trace_overhead']:.3f} (median of {args.repeats} pairs; ratio of the medians "
          f"{speed['exact'] / speed['exact traced']:.3f})")
    write_json(args.json, result)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", type=Path)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="only llm_trace_overhead: exact decode untraced against traced, alternating (no quality, "
                         "float or llama.cpp runs)")
    args = ap.parse_args()
    if args.quick:
        return quick(args)

    import torch
    from rich.console import Console
    from rich.table import Table
    from transformers import AutoModelForCausalLM

    from veracity.exact.spec import ACT_FRAC
    from veracity.models.gguf import smollm2_path
    from veracity.models.llama import ExactLlama

    torch.set_num_threads(args.threads)
    console = Console(width=120)
    path = smollm2_path()
    exact = ExactLlama.from_gguf(path)
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tok = exact.tokenizer

    # quality: teacher forcing on held-out text
    agree = total = 0
    nll_e = nll_f = 0.0
    for text in HELD_OUT:
        ids = tok.encode(text)
        le = exact.logits(ids).astype(np.float64) / (1 << ACT_FRAC)
        with torch.no_grad():
            lf = ref(torch.tensor([ids])).logits[0].double().numpy()
        agree += int((le.argmax(-1) == lf.argmax(-1)).sum())
        total += len(ids)
        nxt = np.array(ids[1:])
        nll_e -= float(log_softmax(le[:-1])[np.arange(len(nxt)), nxt].sum())
        nll_f -= float(log_softmax(lf[:-1])[np.arange(len(nxt)), nxt].sum())
    scored = sum(len(tok.encode(t)) - 1 for t in HELD_OUT)
    ppl_e, ppl_f = math.exp(nll_e / scored), math.exp(nll_f / scored)

    # quality: greedy prefixes on chat prompts
    same16 = 0
    for q in PROMPTS:
        ids = tok.encode(exact.template.render([{"role": "user", "content": q}]))
        got = exact.generate(ids, 16)
        with torch.no_grad():
            want = ref.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)[0, len(ids):].tolist()
        n = min(len(got), len(want))
        same16 += int(got[:n] == want[:n] and (len(got) == len(want) or n == 16))

    # speed: prefill and decode, interleaved
    prompt = tok.encode(exact.template.render([{"role": "user", "content": PROMPTS[0]}]))
    steps = args.decode_tokens

    def float_run() -> tuple[float, float]:
        with torch.no_grad():
            t = time.perf_counter()
            out = ref(torch.tensor([prompt]), use_cache=True)
            pre = time.perf_counter() - t
            past, nxt = out.past_key_values, out.logits[0, -1].argmax()
            t = time.perf_counter()
            for _ in range(steps):
                out = ref(nxt.view(1, 1), past_key_values=past, use_cache=True)
                past, nxt = out.past_key_values, out.logits[0, -1].argmax()
        return len(prompt) / pre, steps / (time.perf_counter() - t)

    llamacpp: Any = None
    try:
        from llama_cpp import Llama

        llamacpp = Llama(model_path=str(path), n_threads=args.threads, n_ctx=512, verbose=False)
    except ImportError:
        console.print("llama.cpp: llama-cpp-python is not installed (`pip install llama-cpp-python` builds it "
                      "from source); its column is left out")

    def llamacpp_run() -> tuple[float, float]:
        llamacpp.reset()
        t = time.perf_counter()
        llamacpp.eval(prompt)
        pre = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(steps):
            token = int(np.argmax(llamacpp.scores[llamacpp.n_tokens - 1]))
            llamacpp.eval([token])
        return len(prompt) / pre, steps / (time.perf_counter() - t)

    runs: dict[str, list[tuple[float, float]]] = {"exact": [], "exact traced": [], "exact, every op traced": [],
                                                  "float32 (transformers)": []}
    if llamacpp is not None:
        runs["llama.cpp"] = []
    for _ in range(args.repeats):
        runs["exact"].append(exact_run(exact, prompt, steps))
        runs["exact traced"].append(exact_run(exact, prompt, steps, traced="coarse"))
        runs["exact, every op traced"].append(exact_run(exact, prompt, steps, traced="full"))
        runs["float32 (transformers)"].append(float_run())
        if llamacpp is not None:
            runs["llama.cpp"].append(llamacpp_run())
    speed = {k: (float(np.median([r[0] for r in v])), float(np.median([r[1] for r in v]))) for k, v in runs.items()}

    table = Table("engine", "prefill tok/s", "decode tok/s", "decode / exact",
                  title=f"SmolLM2-135M-Instruct Q4_1, {args.threads} threads, {len(prompt)}-token prompt, "
                        f"{steps} greedy tokens")
    for name, (pre, dec) in speed.items():
        table.add_row(name, f"{pre:.1f}", f"{dec:.1f}", f"{dec / speed['exact'][1]:.2f}")
    console.print(table)
    result = {
        "llm_top1_agree": agree / total, "llm_ppl_exact": ppl_e, "llm_ppl_float": ppl_f,
        "llm_prefix16_equal": same16 / len(PROMPTS), "llm_tokens_scored": scored,
        "llm_prefill_tok_s_exact": speed["exact"][0], "llm_decode_tok_s_exact": speed["exact"][1],
        "llm_decode_tok_s_float": speed["float32 (transformers)"][1],
        "llm_decode_tok_s_llamacpp": speed["llama.cpp"][1] if llamacpp is not None else None,
        "llm_decode_ratio_llamacpp": speed["llama.cpp"][1] / speed["exact"][1] if llamacpp is not None else None,
        "llm_decode_tok_s_traced": speed["exact traced"][1],
        "llm_traced_ratio": speed["exact"][1] / speed["exact traced"][1],  # untraced speed over traced
        "llm_trace_overhead": trace_overhead([r[1] for r in runs["exact"]], [r[1] for r in runs["exact traced"]]),
        "llm_full_trace_overhead": speed["exact"][1] / speed["exact, every op traced"][1],
        "threads": args.threads, "prompt_tokens": len(prompt), "decode_tokens": steps,
    }
    console.print(f"llm_top1_agree {result['llm_top1_agree']:.4f} over {total} tokens; perplexity exact "
                  f"{ppl_e:.3f} vs float {ppl_f:.3f} ({100 * (ppl_e / ppl_f - 1):+.2f}%); llm_prefix16_equal "
                  f"{result['llm_prefix16_equal']:.3f} ({same16} of {len(PROMPTS)} prompts)")
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
