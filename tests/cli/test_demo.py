"""`veracity demo` tells the whole network story and exits 0 only when every step held; with
``--keep`` its devnet and explorer stay up, and the explorer shows the story in a real browser
(Debian's headless Chromium): the slashed cheater's job page draws the dispute's rounds, the
judgement and the slashing, and no page logs a console error."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from browser import chromium, console_errors
from selenium.webdriver.common.by import By

ROOT = Path(__file__).resolve().parent.parent.parent
PAGES = ["", "providers", "validators", "leases", "receipt", "agents"]


def kept_demo(env):
    """Run `veracity demo --keep` until it says it is kept; returns the process and what it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "veracity.cli", "demo", "--keep"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines: list[str] = []
    kept = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("kept: "):
                kept.set()
        kept.set()

    threading.Thread(target=read, daemon=True).start()
    kept.wait(400)
    return proc, lines


def test_demo_runs_the_network_story_and_its_explorer_shows_it(tmp_path):
    env = {**os.environ, "VERACITY_HOME": str(tmp_path), "COLUMNS": "160"}
    proc, lines = kept_demo(env)
    try:
        out = "".join(lines)
        assert "kept: " in out, out[-3000:]
        check_story(out)
        url = re.search(r"explorer: (http://127\.0\.0\.1:\d+/)", out).group(1)
        cheat = re.search(r"the cheater's dispute, round by round: (\S+)", out).group(1)
        check_explorer(url, cheat, tmp_path)
    finally:
        proc.send_signal(signal.SIGINT)  # the demo stops its devnet and explorer, and exits with its verdict
        try:
            assert proc.wait(60) == 0, "".join(lines)[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert not (tmp_path / "devnet" / "deployment.json").exists()  # the user's devnet folder is untouched


def check_story(out):
    for model in ("digits-mlp", "minilm", "tiny-gpt", "smollm2"):
        assert f"{model}: order" in out and "settled with p0 @ 4.5 VRC" in out
    assert "chat: 'What is the capital of France?' -> 'The capital of France is Paris.' (stop); receipt: order" in out
    assert out.count("bit-identical") == 6 and out.count("match") >= 7
    # a training job, and the same job as two work units on p0 and p1, end at one checkpoint
    m = re.search(r"digits-train: order (\d+) and its work units \(orders \d+, \d+\) ended at checkpoint", out)
    assert m and f"= order {m.group(1)}'s" in out and "p1 @ 2.375" in out
    assert re.search(r"reviews-finetune: order \d+ settled with p0 @ 4.5 VRC", out)  # the MiniLM LoRA fine-tune
    assert re.search(r"p2 stake\s*│\s*1,000\s*│\s*999\s*│\s*-1\s*│\s*yes", out)  # the late provider's collateral
    assert "every step happened as the protocol says" in out
    assert "overturned" in out  # the cheater was caught, judged and slashed: half its collateral and stake share went to the validator
    assert re.search(r"p3 stake\s*│\s*1,000\s*│\s*799.2\s*│\s*-200.8\s*│\s*yes", out)
    assert re.search(r"validator\s*│\s*99,900\s*│\s*100,000.4\s*│\s*\+100.4\s*│\s*yes", out)  # half burnt


def wait_for(driver, css, text, timeout=30):
    """The text of the first element matching ``css`` once it contains ``text`` (the index catches up)."""
    end = time.monotonic() + timeout
    while True:
        found = driver.find_elements(By.CSS_SELECTOR, css)
        if found and text in found[0].text:
            return found[0].text
        if time.monotonic() > end:
            raise AssertionError(f"{css} never showed {text!r}: {found[0].text if found else 'no element'}")
        time.sleep(0.5)
        driver.refresh()


def check_explorer(url, cheat, tmp_path):
    shots = Path(os.environ.get("VERACITY_SCREENSHOTS", tmp_path))
    driver = chromium()
    try:
        driver.get(cheat)
        # the slashed cheater's page: the bisection's rounds down to one record, one chunk, one element
        judged = wait_for(driver, "#judgement", "the provider lost")
        assert "the referee recomputed element" in judged
        rounds = [li.text for li in driver.find_elements(By.CSS_SELECTOR, ".rounds li")]
        kinds = [li.get_attribute("class") for li in driver.find_elements(By.CSS_SELECTOR, ".rounds li")]
        assert any("round-records" in k for k in kinds) and any("round-element" in k for k in kinds), rounds
        assert any("narrowed to one record" in r for r in rounds) and any("narrowed to one element" in r
                                                                           for r in rounds), rounds
        bars = driver.find_elements(By.CSS_SELECTOR, ".round-records .bar")
        assert bars, "the bisection is drawn"
        settled = driver.find_element(By.ID, "settlement").text
        assert re.search(r"provider 0x\w+…\w+ lost 200\.8 VRC: order \d+ overturned at record \d+, element \d+",
                         settled), settled
        assert "was slashed 200.8 VRC" in settled and "100.4 VRC to validator" in settled, settled
        assert driver.find_element(By.ID, "order-state").text == "overturned"
        driver.execute_script("document.getElementById('dispute').scrollIntoView()")
        driver.save_screenshot(str(shots / "explorer-dispute.png"))
        assert console_errors(driver) == []
        # the cheater's own page links back: its slash and its lost dispute
        lost = next(li for li in driver.find_elements(By.CSS_SELECTOR, "#settlement li") if "overturned" in li.text)
        lost.find_element(By.CSS_SELECTOR, "a.addr").click()
        page = wait_for(driver, "main", "disputes")
        assert "lost 1" in page and "slashes" in page, page
        for path in PAGES:
            driver.get(url + path)
            assert driver.find_elements(By.CSS_SELECTOR, "main h1"), path
            assert console_errors(driver) == [], path
        driver.get(url)
        overview = wait_for(driver, "main", "Latest orders")
        assert "overturned" in overview and "finalized" in overview
        driver.save_screenshot(str(shots / "explorer-overview.png"))
        providers = driver.find_element(By.CSS_SELECTOR, "nav a[href='/providers']")
        providers.click()
        board = wait_for(driver, "table.nodes", "provider")
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.nodes tbody tr")) == 4, board
        assert console_errors(driver) == []
    finally:
        driver.quit()
