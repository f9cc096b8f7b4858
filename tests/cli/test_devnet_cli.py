"""`veracity devnet up|status|down` and `veracity deploy` as separate processes, as a user runs them."""

import os
import subprocess
import sys

import pytest

from veracity.chain.anvil import Anvil
from veracity.chain.devnet import Deployment, dev_accounts
from veracity.errors import ChainError


def veracity(*args, home):
    env = {**os.environ, "VERACITY_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "veracity.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_devnet_up_status_down(tmp_path):
    up = veracity("devnet", "up", "--accounts", "4", home=tmp_path)
    try:
        assert up.returncode == 0, up.stderr
        dep = Deployment.read(tmp_path / "devnet" / "deployment.json")
        assert (tmp_path / "devnet" / "deployment.json").stat().st_mode & 0o777 == 0o600  # it holds keys
        assert dep.rpc_url in up.stdout and dep.market in up.stdout
        _, token, _, _ = dep.clients(dep.accounts[1].key)
        assert token.balance_of(dep.accounts[1].address) == 100_000 * 10**18  # funded
        again = veracity("devnet", "up", home=tmp_path)
        assert again.returncode == 0 and "already running" in again.stdout
        status = veracity("devnet", "status", home=tmp_path)
        assert status.returncode == 0 and "latest block" in status.stdout
    finally:
        down = veracity("devnet", "down", home=tmp_path)
    assert down.returncode == 0 and "devnet stopped" in down.stdout
    gone = veracity("devnet", "status", home=tmp_path)
    assert gone.returncode == 1 and "no devnet is running" in gone.stderr and "Traceback" not in gone.stderr
    with pytest.raises(ChainError, match="cannot reach|did not take|refused"):
        dep.clients(dep.accounts[1].key)[1].faucet(1)


def test_deploy_to_any_rpc_url_has_no_faucet(tmp_path):
    node = Anvil(accounts=2)  # stands for any EVM chain: only its URL and a funded key are used
    try:
        key = dev_accounts(1)[0].key
        out = tmp_path / "dep.json"
        proc = veracity("deploy", "--rpc-url", node.rpc_url, "--key", key, "--out", out, home=tmp_path)
        assert proc.returncode == 0, proc.stderr
        dep = Deployment.read(out)
        _, token, _, _ = dep.clients(key)
        with pytest.raises(ChainError, match="only on devnet"):
            token.faucet(1)
        bad = veracity("deploy", "--rpc-url", node.rpc_url, "--key", "0x1234", home=tmp_path)
        assert bad.returncode == 2 and "not a valid private key" in bad.stderr
    finally:
        node.stop()
