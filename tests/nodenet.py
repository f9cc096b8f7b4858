"""A devnet for tests: anvil, the contracts, and provider and validator daemons as real OS processes
(``Net``; the ``net`` fixture of ``conftest.py`` gives a fresh one per test)."""

import json
import subprocess
import sys
import time

from veracity.chain.anvil import Anvil, free_port
from veracity.chain.devnet import deploy, dev_accounts

TOKEN = 10**18


class Net:
    """anvil + a deployment + provider daemons started on demand; everything stopped at the end."""

    def __init__(self, folder, accounts=6, **params):
        self.folder = folder
        self.node = Anvil(accounts=accounts, block_time=1)
        self.accts = dev_accounts(accounts)
        self.dep = deploy(self.node.rpc_url, self.accts[0], self.accts, **params)
        self.dep_file = folder / "deployment.json"
        self.dep.write(self.dep_file)
        self.procs = []
        self.last = None

    def provider(self, i, models, floor=TOKEN // 10, behaviour="honest", wait=True, **cfg):
        """Start a provider daemon as account ``i``; returns its account once it is registered."""
        port = free_port()
        config = {"deployment": str(self.dep_file), "key": self.accts[i].key, "home": str(self.folder / f"p{i}"),
                  "port": port, "behaviour": behaviour,
                  "policy": {"models": models, "price_floor": floor, "markup_bps": 1000, "collateral_bps": 5000,
                             "min_deadline_s": 30, **cfg.pop("policy", {})}, **cfg}
        path = self.folder / f"p{i}.json"
        path.write_text(json.dumps(config))
        self.procs.append(self._spawn(path))
        self.last = (self.procs[-1], path)
        self.url = f"http://127.0.0.1:{port}"
        if wait:
            self._registered(i, 1)
        return self.accts[i]

    def providers(self, indices, models, **cfg):
        """Start provider daemons as accounts ``indices`` side by side (each loads its models and
        warms its workers meanwhile); returns their accounts once every one is registered."""
        accts = [self.provider(i, models, wait=False, **cfg) for i in indices]
        for i in indices:
            self._registered(i, 1)
        return accts

    def _registered(self, i, role, within=300):
        """Wait until account ``i`` is registered as ``role`` (a loaded machine starts daemons slowly)."""
        _, _, reg, _ = self.dep.clients(self.accts[i].key)
        end = time.monotonic() + within
        while reg.node(self.accts[i].address).role != role:
            if time.monotonic() > end:
                raise AssertionError(f"account {i} did not register in {within} s:\n{self.logs()[-3000:]}")
            time.sleep(0.1)

    def validator(self, i, **cfg):
        """Start a validator daemon as account ``i``; returns (account, its /checks URL) once registered."""
        port = free_port()
        config = {"deployment": str(self.dep_file), "key": self.accts[i].key, "home": str(self.folder / f"v{i}"),
                  "port": port, "rate": 1.0, **cfg}
        path = self.folder / f"v{i}.json"
        path.write_text(json.dumps(config))
        self.procs.append(self._spawn(path, "veracity.node.validator"))
        self._registered(i, 2)
        return self.accts[i], f"http://127.0.0.1:{port}/checks"

    def _spawn(self, path, module="veracity.node.provider"):
        log = open(path.with_suffix(".log"), "ab")  # the daemon's log, next to its config
        return subprocess.Popen([sys.executable, "-m", "veracity.cli", module.rsplit(".", 1)[1], "run", "--config", str(path)],
                                stdout=log, stderr=subprocess.STDOUT)

    def restart(self, path):
        self.procs.append(self._spawn(path))

    def logs(self):
        return "".join(f"--- {p.name}\n{p.read_text()}" for p in sorted(self.folder.glob("[pv]*.log")))

    def stop(self):
        for p in self.procs:
            p.kill()
        self.node.stop()


def fuzz(url, examples):
    """Schema-driven requests against every operation of the server at ``url`` (its OpenAPI
    schema), a bounded number each; yields (operation, case, response)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    for result in schema.get_all_operations():
        op = result.ok()
        seen = []

        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def call(case):
            seen.append((case, case.call(base_url=url, timeout=60)))

        call()
        yield from ((op, case, resp) for case, resp in seen)

