"""Headless Chromium from Debian, driven through Selenium, for the pages a
person looks at (the status page, the WebSocket chat).

`chromium()` starts a browser with Debian's chromium and chromium-driver
packages and stops it when the block ends; console messages are recorded
so that a test can assert that a page logged no error. A machine without
the packages fails the test with the line that says what to install:
make test installs them like its other Debian packages, so a missing
browser is never skipped silently.
"""

import contextlib
import os
import shutil

import pytest

CHROMIUM = os.environ.get("PYPARALLEL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PYPARALLEL_CHROMEDRIVER", "/usr/bin/chromedriver")

# How long a page may take to show what the test waits for; generous, as
# the browser shares the machine's cores with the server under test.
PAGE_TIMEOUT = 20


@contextlib.contextmanager
def chromium(window=(1280, 900)):
    """A headless Chromium WebDriver, quit when the block ends."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(
            f"headless Chromium is missing ({', '.join(missing)}): install Debian's chromium and chromium-driver "
            "packages (make test does: tools/setup-apt.sh)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={window[0]},{window[1]}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver):
    """The console messages of level SEVERE logged since the last call
    (uncaught exceptions, failed loads, console.error)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def wait_for(driver, condition, timeout=PAGE_TIMEOUT, message="the page did not reach the expected state"):
    """Waits until condition(driver) is truthy and returns its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)
