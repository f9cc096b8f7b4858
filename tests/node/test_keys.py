"""A node's key at rest: read from an encrypted Ethereum keystore with the passphrase from the
environment, never a traceback when it cannot be; files holding keys readable by their owner only."""

import json
import stat
import subprocess
import sys

import pytest
from eth_account import Account
from pydantic import ValidationError

from veracity.chain.devnet import dev_accounts
from veracity.node.provider import ProviderConfig
from veracity.node.validator import ValidatorConfig

CONFIG = {"deployment": "dep.json", "home": "home", "port": 1, "policy": {"models": ["minilm"], "price_floor": 1}}


@pytest.fixture
def keystore(tmp_path):
    acct = dev_accounts(1)[0]
    path = tmp_path / "node.keystore.json"  # the format geth and `cast wallet` write
    path.write_text(json.dumps(Account.encrypt(acct.key, "open sesame", kdf="scrypt", iterations=2**10)))
    return acct, path


def test_a_node_reads_its_key_from_a_keystore(keystore, monkeypatch):
    acct, path = keystore
    monkeypatch.setenv("VERACITY_KEYSTORE_PASSWORD", "open sesame")
    cfg = ProviderConfig.model_validate({**CONFIG, "keystore": str(path)})
    assert Account.from_key(cfg.key).address == acct.address
    monkeypatch.setenv("NODE_PASS", "open sesame")
    cfg = ValidatorConfig.model_validate({**CONFIG, "keystore": str(path), "keystore_password_env": "NODE_PASS"})
    assert Account.from_key(cfg.key).address == acct.address


@pytest.mark.parametrize("env,extra,message", [
    ({"VERACITY_KEYSTORE_PASSWORD": "wrong"}, {}, "cannot be decrypted: wrong passphrase"),
    ({}, {}, "set VERACITY_KEYSTORE_PASSWORD to the keystore's passphrase"),
    ({"VERACITY_KEYSTORE_PASSWORD": "x"}, {"keystore": "/nonexistent/k.json"}, "cannot be read"),
    ({}, {"keystore": None}, "a node needs its key: set key, or keystore"),
])
def test_a_keystore_that_cannot_be_used_is_a_clear_error(keystore, monkeypatch, env, extra, message):
    _, path = keystore
    monkeypatch.delenv("VERACITY_KEYSTORE_PASSWORD", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError, match=message):
        ProviderConfig.model_validate({**CONFIG, "keystore": str(path), **extra})


def test_the_daemon_says_what_is_wrong_in_one_line(keystore, tmp_path):
    _, path = keystore
    cfg = tmp_path / "provider.json"
    cfg.write_text(json.dumps({**CONFIG, "keystore": str(path)}))
    proc = subprocess.run([sys.executable, "-m", "veracity.cli", "provider", "run", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "VERACITY_KEYSTORE_PASSWORD": "wrong"})
    assert proc.returncode == 2 and "wrong passphrase" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_files_that_hold_keys_are_the_owners_alone(tmp_path):
    from veracity.chain.devnet import write_private

    path = tmp_path / "config.json"
    path.write_text("{}")
    path.chmod(0o644)
    write_private(path, '{"key": "0x01"}')  # an existing file loses its wider mode too
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == '{"key": "0x01"}'
