"""`veracity label` and `veracity data` as a user runs them, each a separate process against a real
anvil node: a labelling round through commit, reveal and finalize, and a pool opened and shown;
bad input gets one line that says what to do, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from veracity.chain.anvil import Anvil
from veracity.chain.devnet import deploy, dev_accounts
from veracity.sim.traffic import anvil_advance

ROOT = Path(__file__).resolve().parent.parent.parent


def veracity(*args, home, timeout=120):
    import os

    return subprocess.run([sys.executable, "-m", "veracity.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "VERACITY_HOME": str(home)}, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("datacli")
    node = Anvil(accounts=6)
    try:
        dep = deploy(node.rpc_url, dev_accounts(6)[0], dev_accounts(6))
        dep.write(folder / "deployment.json")
        yield dep, folder
    finally:
        node.stop()


def one_line_error(run):
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0]


def test_a_labelling_round_through_the_cli(chain, tmp_path):
    dep, folder = chain
    d = ["--deployment", folder / "deployment.json"]
    items = tmp_path / "items.jsonl"
    truth = [0, 1, 2, 1, 0, 2, 2, 0, 1, 1, 2, 0]
    items.write_text("".join(json.dumps({"text": f"item {i}"}) + "\n" for i in range(len(truth))))
    slip = {2: 5}  # one mistake; labeller 4 answers every item wrong
    sets = {w: [(c + (1 if w == 4 or slip.get(w) == i else 0)) % 3 for i, c in enumerate(truth)] for w in (1, 2, 4)}
    post = veracity("label", "post", items, "--classes", "3", "--labellers", "3", "--reward", "40", "--stake", "10",
                    "--commit-for", "300", "--reveal-for", "300", *d, home=tmp_path)
    assert post.returncode == 0 and ": 12 items, 3 classes, 3 labellers" in post.stdout, post.stderr
    t = post.stdout.split(":")[0].removeprefix("task ")
    for who, labels in sets.items():
        (tmp_path / f"l{who}.json").write_text(json.dumps(labels))
        run = veracity("label", "commit", t, tmp_path / f"l{who}.json", "--account", who, *d, home=tmp_path)
        assert run.returncode == 0, run.stderr
    (tmp_path / "short.json").write_text("[0, 1]")
    assert f"task {t} has 12 items" in one_line_error(veracity("label", "commit", t, tmp_path / "short.json",
                                                           "--account", 5, *d, home=tmp_path))
    assert "reveal" in one_line_error(veracity("label", "reveal", t, "--account", 1, *d, home=tmp_path))  # too early
    anvil_advance(dep)(301)
    for who in sets:
        assert veracity("label", "reveal", t, "--account", who, *d, home=tmp_path).returncode == 0
    assert f"no labels committed to task {t} from this machine" in one_line_error(
        veracity("label", "reveal", t, "--account", 5, *d, home=tmp_path))
    offline = veracity("label", "aggregate", *(tmp_path / f"l{w}.json" for w in sets), "--classes", "3", home=tmp_path)
    assert offline.returncode == 0, offline.stderr
    anvil_advance(dep)(301)
    done = veracity("label", "finalize", t, *d, home=tmp_path)
    assert done.returncode == 0, done.stderr
    consensus = json.loads(offline.stdout.splitlines()[0].removeprefix("consensus: "))
    assert f"consensus {consensus}" in done.stdout and consensus == truth  # the chain derived what anyone derives
    assert dep.accounts[4].address in done.stdout and "slashed 5 VRC" in done.stdout
    shown = veracity("label", "show", t, *d, home=tmp_path)
    assert "finalized" in shown.stdout and f"consensus: {truth}" in shown.stdout
    assert "not JSON" in one_line_error(veracity("label", "aggregate", items, "--classes", "3", home=tmp_path))


def test_a_pool_through_the_cli_and_its_refusals(chain, tmp_path):
    dep, folder = chain
    d = ["--deployment", folder / "deployment.json"]
    made = veracity("data", "create", "--topic", "a short review of a film", "--reward", "9", "--budget", "3",
                    "--epochs", "2", "--epoch-length", "600", *d, home=tmp_path)
    assert made.returncode == 0 and "pool 0: 2 epoch(s) of 600 s, 9 VRC each" in made.stdout, made.stderr
    shown = veracity("data", "show", "0", *d, home=tmp_path)
    assert "near-copy at 90% similarity" in shown.stdout and "0 accepted of 0" in shown.stdout
    assert "there is no pool 7" in one_line_error(veracity("data", "show", "7", *d, home=tmp_path))
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "url": "x"}\n')
    assert "only the fields text, label and provenance" in one_line_error(
        veracity("data", "contribute", "0", tmp_path / "bad.jsonl", *d, home=tmp_path))
    assert "--account must be between" in one_line_error(veracity("data", "show", "0", "--account", "99", *d,
                                                                  home=tmp_path))
    assert "the epoch has not ended" in one_line_error(veracity("data", "pay", "0", "--epoch", "0", *d, home=tmp_path))
