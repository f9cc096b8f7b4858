"""The fixed-point Dawid-Skene (``veracity.data.consensus``) against crowd-kit's, on simulated
labellers of known accuracies, and what ``LabelTasks.finalize`` costs on anvil:

- ``ds_agreement``: the share of items whose consensus equals crowd-kit's default
  ``DawidSkene()`` (up to 100 iterations, stopping at its tolerance on its loss);
- ``ds_agreement_same_iterations``: the same against crowd-kit run for exactly the iterations we
  ran (its tolerance off): what is left when both stop at the same place;
- ``iterations_match``: the share of rounds where we stop where crowd-kit stops, and
  ``iterations_gaps`` the differences (ours less crowd-kit's ``len(loss_history_)``) seen;
- ``truth_ours``, ``truth_crowdkit``, ``truth_majority``: the share of items each gets right;
- with ``--gas``: ``finalize`` gas per transaction on simulated rounds of a few shapes, and its
  worst case at the most the contract takes (8 labellers x 64 items x 4 classes, every branch on
  its costlier side and no early stop: 100 iterations over three calls).

Rounds: K = 2..4 classes, 5..7 labellers of accuracies 0.55..0.95 (wrong answers uniform over
the other classes), one of them answering at random.

    python bench/data_consensus.py [--seed 0] [--rounds 36] [--items 64] [--gas] [--json PATH]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import write_json  # noqa: E402
from veracity.data.consensus import dawid_skene, majority_vote  # noqa: E402

GAS_CAP = 2**24  # EIP-7825's per-transaction gas limit


def simulate(rng: np.random.Generator, truth: np.ndarray, accuracies: list[float | None], classes: int) -> np.ndarray:
    """Labels (items x labellers): labeller j gives the true class with probability accuracies[j],
    else another class uniformly; an accuracy of None answers uniformly at random (a spammer)."""
    cols = []
    for a in accuracies:
        if a is None:
            cols.append(rng.integers(0, classes, len(truth)))
            continue
        wrong = (truth + rng.integers(1, classes, len(truth))) % classes
        cols.append(np.where(rng.random(len(truth)) < a, truth, wrong))
    return np.stack(cols, axis=1)


def simulated_rounds(seed: int, rounds: int, items: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(classes, truth, labels) per round: K = 2..4, 5..7 labellers of accuracies 0.55..0.95, one a spammer."""
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        classes, n_labellers = 2 + r % 3, 5 + (r // 3) % 3
        truth = rng.integers(0, classes, items)
        accuracies = [*rng.uniform(0.55, 0.95, n_labellers - 1), None]
        yield classes, truth, simulate(rng, truth, accuracies, classes)


def crowd_kit(labels: np.ndarray, **kw: float) -> tuple[np.ndarray, int]:
    """crowd-kit's DawidSkene(**kw) on an items x labellers array: its labels, and its iterations."""
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    n, m = labels.shape
    df = pd.DataFrame({"task": np.repeat(np.arange(n), m), "worker": np.tile(np.arange(m), n),
                       "label": labels.reshape(-1)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas deprecations inside crowd-kit
        ds = DawidSkene(**kw).fit(df)
    return ds.labels_.sort_index().to_numpy(), len(ds.loss_history_)


def agreement_with_crowdkit(seed: int = 0, rounds: int = 36, items: int = 64, same_iterations: bool = True) -> dict:
    """Our consensus against crowd-kit's default DawidSkene, and both against the truth; with
    ``same_iterations``, also against crowd-kit run for the iterations we ran (twice the time:
    crowd-kit's pandas take about 0.25 s a round, our integers under 0.01 s)."""
    same = same_at = ours_right = theirs_right = majority_right = total = matched = 0
    iterations: list[int] = []
    gaps: set[int] = set()
    t0 = time.perf_counter()
    for classes, truth, labels in simulated_rounds(seed, rounds, items):
        ours = dawid_skene(labels.tolist(), classes)
        theirs, their_iterations = crowd_kit(labels)
        got = np.array(ours.labels)
        same += int((got == theirs).sum())
        if same_iterations:
            same_run, _ = crowd_kit(labels, n_iter=ours.iterations, tol=float("-inf"))
            same_at += int((got == same_run).sum())
        ours_right += int((got == truth).sum())
        theirs_right += int((theirs == truth).sum())
        majority_right += int((np.array(majority_vote(labels.tolist(), classes)) == truth).sum())
        matched += ours.iterations == their_iterations
        gaps.add(ours.iterations - their_iterations)
        iterations.append(ours.iterations)
        total += len(truth)
    return {"ds_agreement": same / total, "ds_agreement_same_iterations": same_at / total if same_iterations else None,
            "items": total, "rounds": rounds, "seed": seed,
            "truth_ours": ours_right / total, "truth_crowdkit": theirs_right / total,
            "truth_majority": majority_right / total,
            "iterations_match": matched / rounds, "iterations_gaps": sorted(gaps),
            "iterations_mean": float(np.mean(iterations)),
            "iterations_max": int(max(iterations)), "wall_s": round(time.perf_counter() - t0, 2)}


def worst_case_source(source: str) -> str:
    """LabelTasks with its EM never stopping early and every data-dependent branch in the loop on
    its costlier side: what it costs is an upper bound on any labels of the same shape."""
    swaps = [("if t > 1 and loss - last < tol:", "if t > MAX_ITERATIONS and loss - last < tol:"),
             ("if gain and a != b:", "if gain:"), ("if acc >= 2**128:", "if acc >= 0:")]
    for old, new in swaps:
        if old not in source:
            raise ValueError(f"LabelTasks.vy has no {old!r}: update worst_case_source")
        source = source.replace(old, new)
    head, e_step = source.split("# E-step", 1)
    e_step, n = re.subn(r"if z >= 2(\*\*\d+)?:", "if z >= 0:", e_step)
    if n != 8:
        raise ValueError("LabelTasks.vy's E-step has no 8-step top-bit search: update worst_case_source")
    return head + "# E-step" + e_step


def finalize_gas(shapes: list[tuple[int, int, int]], worst_case: bool = False, seed: int = 0) -> list[dict]:
    """Post, commit, reveal and finalize a round of each (items, labellers, classes) on a fresh
    anvil; the gas of each finalize transaction and the iterations run. Simulated labellers of
    accuracies 0.9, 0.85, ... (the last at random); with ``worst_case``, random labels and the
    bound of ``worst_case_source``."""
    from veracity.chain.anvil import Anvil
    from veracity.chain.build import CONTRACTS
    from veracity.chain.client import Chain, TokenClient
    from veracity.chain.devnet import dev_accounts
    from veracity.chain.labels import LabelTasksClient, new_salt

    token_unit = 10**18
    most = max(m for _, m, _ in shapes)
    rng = np.random.default_rng(seed)
    anvil = Anvil(accounts=most + 3)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        contract = "LabelTasks"
        if worst_case:
            contract = str(Path(tmp) / "LabelTasks.vy")
            Path(contract).write_text(worst_case_source((CONTRACTS / "LabelTasks.vy").read_text()))
        try:
            accounts = dev_accounts(most + 3)
            chain = Chain(anvil.rpc_url, accounts[0].key)
            token = chain.deploy("Token", 10**9 * token_unit, True)
            address = chain.deploy(contract, token, accounts[1].address)
            tok = TokenClient(chain, token)
            clients = []
            for acct in accounts[2:]:
                tok.transfer(acct.address, 10_000 * token_unit)
                own = Chain(anvil.rpc_url, acct.key)
                clients.append(LabelTasksClient(own, address, TokenClient(own, token)))
            requester, labellers = clients[0], clients[1:]
            for n, m, k in shapes:
                if worst_case:
                    sets = rng.integers(0, k, (m, n)).tolist()
                else:
                    truth = rng.integers(0, k, n)
                    sets = simulate(rng, truth, [0.9 - 0.05 * j for j in range(m - 1)] + [None], k).T.tolist()
                now = chain.now()
                task = requester.post_task(bytes(32), n, k, m, 1000 * token_unit, 10 * token_unit, now + 100, now + 200,
                                           5000, 5000)
                salts = [new_salt() for _ in range(m)]
                for client, labels, salt in zip(labellers, sets, salts):
                    client.commit_labels(task, labels, salt)
                chain.w3.provider.make_request("evm_increaseTime", [101])
                chain.w3.provider.make_request("evm_mine", [])
                for client, labels, salt in zip(labellers, sets, salts):
                    client.reveal(task, labels, salt)
                chain.w3.provider.make_request("evm_increaseTime", [100])
                chain.w3.provider.make_request("evm_mine", [])
                settled = requester.finalize(task)
                same = None
                if not worst_case:
                    expected = dawid_skene([list(r) for r in zip(*sets)], k)
                    same = settled.consensus == bytes(expected.labels) and settled.iterations == expected.iterations
                out.append({"items": n, "labellers": m, "classes": k, "iterations": settled.iterations,
                            "gas_per_call": list(settled.gas_per_call), "max_call": max(settled.gas_per_call),
                            "under_cap": max(settled.gas_per_call) < GAS_CAP, "same_as_python": same})
        finally:
            anvil.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=36)
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--gas", action="store_true", help="also measure finalize's gas on anvil")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = agreement_with_crowdkit(args.seed, args.rounds, args.items)
    print(f"Dawid-Skene vs crowd-kit, {result['rounds']} rounds, {result['items']} items (seed {args.seed})")
    for key in ("ds_agreement", "ds_agreement_same_iterations", "iterations_match", "truth_ours", "truth_crowdkit",
                "truth_majority"):
        print(f"  {key:<30} {result[key]:.4f}")
    print(f"  {'iterations (mean, max)':<30} {result['iterations_mean']:.1f}, {result['iterations_max']}")
    if args.gas:
        result["finalize"] = finalize_gas([(20, 5, 2), (40, 5, 3), (64, 5, 4), (64, 8, 4)])
        result["finalize_worst_case"] = finalize_gas([(64, 8, 4)], worst_case=True)
        print("finalize gas per transaction (cap 2**24 = 16,777,216)")
        for row in result["finalize"] + result["finalize_worst_case"]:
            label = "worst case" if row["same_as_python"] is None else "simulated"
            calls = ", ".join(f"{g:,}" for g in row["gas_per_call"])
            shape = f"{row['labellers']} x {row['items']}, K={row['classes']}"
            print(f"  {shape} ({label}): {row['iterations']} iterations, {calls}")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
