import os
import secrets
import sys

# One compute thread per process (set OMP_NUM_THREADS to choose otherwise): the suite runs two
# pytest workers on two cores, each starting daemons and their worker processes, so threads beyond
# the cores only make every OpenMP barrier (torch's, the native kernels') spin on a thread that is
# not running: a tiny-GPT run took 47 s instead of 5 next to another one. Idle OpenMP threads sleep
# rather than spin, for the tests that run on two threads on purpose. Exact results never depend
# on either; daemons, their workers and CLI runs inherit both (``runtime.threads_each``).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if "torch" in sys.modules:  # imported before this file: its thread pool may be sized already
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The test files that take minutes (real daemons, chains, disputes, a model through a gateway),
# slowest first: collected first, so the two workers start on them and the quick tests fill in
# around them, instead of one of them running alone at the end while the other idles.
SLOW_FIRST = ("tests/agents/test_agents_e2e.py", "tests/cli/test_demo.py", "tests/chain/test_invariants.py",
              "tests/node/test_soak.py", "tests/node/test_slashing.py", "tests/gateway/test_gateway.py",
              "tests/node/test_validator.py", "tests/cli/test_job_cli.py", "tests/cli/test_infer_cli.py",
              "tests/node/test_many_jobs.py", "tests/node/test_dispute_e2e.py", "tests/node/test_train_e2e.py",
              "tests/node/test_ray_executor.py", "tests/explorer/test_explorer.py",
              "tests/data/test_pool_e2e.py", "tests/node/test_synthesize_e2e.py", "tests/node/test_llm_e2e.py",
              "tests/cli/test_data_cli.py", "tests/node/test_job_e2e.py", "tests/node/test_oracle.py")


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(SLOW_FIRST)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def fresh_rng():
    """A generator seeded fresh each run (the seed is printed so a failure can be replayed)."""
    seed = int(os.environ.get("VERACITY_TEST_SEED", secrets.randbits(32)))
    print(f"\nVERACITY_TEST_SEED={seed}")
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def minilm():
    from veracity.models.registry import load

    return load("minilm")


@pytest.fixture(scope="session")
def digits():
    from veracity.models.registry import load

    return load("digits-mlp")


@pytest.fixture(scope="session")
def gpt():
    from veracity.models.registry import load

    return load("tiny-gpt")


@pytest.fixture(scope="session")
def sentences():
    path = os.path.join(os.path.dirname(__file__), "data", "sentences.txt")
    return open(path, encoding="utf-8").read().splitlines()


@pytest.fixture
def net(tmp_path):
    """A fresh devnet (anvil, the contracts), daemons started on demand, all stopped at the end."""
    from nodenet import Net

    n = Net(tmp_path)
    yield n
    n.stop()
