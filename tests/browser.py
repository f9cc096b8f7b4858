"""Real-browser helpers for the explorer's tests: Debian's headless Chromium driven by its chromedriver.

``chromium()`` starts a browser (the caller quits it: use it in a fixture); ``console_errors(driver)``
reads what the page logged at SEVERE level (``console.error``, uncaught exceptions, failed loads: a
page served without a favicon logs the browser's own ``/favicon.ico`` 404 there too).

Both binaries come from Debian's ``chromium`` and ``chromium-driver`` packages, which ``make install``
installs when it runs as root (or with passwordless sudo); without them the tests that need a browser
are skipped. Selenium never downloads a driver or browser: with an explicit ``Service(executable_path)``
it does not run Selenium Manager at all (``DriverFinder`` skips it), so no ``SE_OFFLINE`` is needed.
"""

import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from veracity.node.launcher import spawn_explorer

MISSING = ("Chromium or chromedriver missing: run `make install` as root, or "
           "`apt-get install chromium chromium-driver`")


def chromium() -> webdriver.Chrome:
    """A headless Debian Chromium whose browser console ``console_errors`` can read; skips the test without one."""
    binary = shutil.which("chromium") or shutil.which("chromium", path="/usr/bin")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip(MISSING)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """The messages of the SEVERE browser-console entries since the last read (reading empties the log)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@contextmanager
def explorer(dep_file, folder):
    """``veracity explorer`` on a deployment, as its own process on a free port; yields its URL."""
    proc, url = spawn_explorer(dep_file, Path(folder) / "explorer.db", Path(folder) / "explorer.log")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def check_receipt(driver, url, receipt):
    """The explorer's receipt checker's verdict and reason for ``receipt`` (a dict), pasted in its form."""
    from selenium.webdriver.common.by import By

    driver.get(url + "receipt")
    box = driver.find_element(By.ID, "receipt")
    driver.execute_script("arguments[0].value = arguments[1];", box, json.dumps(receipt))
    driver.find_element(By.ID, "check").click()
    from selenium.webdriver.support.ui import WebDriverWait

    verdict = WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.ID, "verdict"))[0].text  # the answer's page
    reason = driver.find_elements(By.ID, "reason")
    return verdict, reason[0].text if reason else ""
