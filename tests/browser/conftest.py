"""The browser tier's Chromium: Debian's headless chromium + chromium-driver driven by selenium.

Without them the tier is skipped locally and fails in CI (``CI=true``): ``.ci/run`` installs them.
"""

import os
import shutil

import pytest


def unavailable(what: str, fix: str = "apt-get install -y chromium chromium-driver && pip install selenium") -> None:
    """Skip the test locally, fail it in CI (``CI=true``), saying what is missing and how to get it."""
    msg = f"{what}: {fix}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the browser tier must run in CI but {msg}", pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is not installed")
    chrome = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if chrome is None or driver is None:
        unavailable("chromium or chromedriver is not on PATH")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(driver), options=opts)  # a local driver: no download, no network
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()
