"""The devnet's anvil comes from the npm registry on a fresh machine, and runs. (The bootstrap,
`make install`, installs it from the registry; the test installs it again from npm's cache, so it
needs no network.)"""

import subprocess

from veracity.chain.anvil import ANVIL_PACKAGE, Anvil, install_anvil


def test_anvil_installs_from_npm_into_an_empty_cache(tmp_path):
    binary = install_anvil(tmp_path / "cache", offline=True)
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and ANVIL_PACKAGE.rsplit("@", 1)[1] in out.stdout


def test_anvil_serves_json_rpc_on_a_free_port():
    from web3 import Web3

    a, b = Anvil(accounts=2), Anvil(accounts=2)
    try:
        assert a.port != b.port
        assert Web3(Web3.HTTPProvider(a.rpc_url)).eth.chain_id == 31337
    finally:
        a.stop()
        b.stop()
    assert a.proc.poll() is not None
