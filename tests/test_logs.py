"""Daemons log one line per event through `logging`: plain or JSON lines, at the level asked for."""

import io
import json
import subprocess
import sys

import pytest

from veracity.logs import log, setup


def test_events_are_lines_or_json_lines_at_the_level_asked_for():
    out = io.StringIO()
    setup("info", stream=out)
    log("provider", "order 3: committed")
    log("provider", "too chatty", level=10)  # debug: below the level
    assert out.getvalue().splitlines()[-1].endswith(" provider: order 3: committed")
    assert "too chatty" not in out.getvalue()
    out = io.StringIO()
    setup("debug", json_lines=True, stream=out)
    log("validator", "order 4: match")
    doc = json.loads(out.getvalue().splitlines()[-1])
    assert doc["component"] == "validator" and doc["message"] == "order 4: match" and doc["level"] == "info"
    with pytest.raises(ValueError, match="use one of debug, info, warning, error"):
        setup("loud")
    setup("info")


def test_a_daemon_with_an_unknown_log_level_is_refused_in_one_line(tmp_path):
    cfg = tmp_path / "p.json"
    cfg.write_text(json.dumps({"deployment": str(tmp_path / "dep.json"), "key": "0x" + "11" * 32,
                               "home": str(tmp_path), "port": 1, "policy": {"models": ["digits-mlp"]}}))
    bad = subprocess.run([sys.executable, "-m", "veracity.cli", "provider", "run", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: {cfg} is not a valid provider config: policy.price_floor: Field required"]
    cfg.write_text(cfg.read_text().replace('"models"', '"price_floor": 1, "models"'))
    proc = subprocess.run([sys.executable, "-m", "veracity.cli", "provider", "run", "--config", str(cfg),
                           "--log-level", "loud"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "log level 'loud': use one of debug, info, warning, error" in proc.stderr, proc.stderr
