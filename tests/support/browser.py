"""The web page in Debian's headless Chromium: the served app, the driver and the page helpers
(the browser tests, the review report and the worklist)."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait
from werkzeug.serving import make_server

from service import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
OUTPUT = Path(__file__).resolve().parents[2] / "test-output"
WAIT_S = 30  # how long the page may take to reach a state; not a performance check
TOKEN = "browser-token"


@dataclass
class Live:
    base: str
    db: Path


def _serve(config: dict[str, Any], tmp: Path) -> Iterator[Live]:
    db = tmp / "audit.sqlite3"
    app = create_app({"DATABASE_URL": f"sqlite:///{db}", **config})
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="ui-test-server", daemon=True)
    thread.start()
    try:
        yield Live(f"http://127.0.0.1:{server.server_port}", db)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The app as after `make run`: authentication off."""
    yield from _serve({"API_REQUIRE_AUTH": False, "CDS_REQUIRE_JWT": False},
                      tmp_path_factory.mktemp("live"))


@pytest.fixture(scope="module")
def live_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The app with API_REQUIRE_AUTH and CDS_REQUIRE_JWT on (the defaults)."""
    yield from _serve({"API_REQUIRE_AUTH": True, "API_TOKENS": TOKEN, "CDS_REQUIRE_JWT": True},
                      tmp_path_factory.mktemp("live-auth"))


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing (Debian package {package}): install with `{INSTALL}`")
    profile = tempfile.TemporaryDirectory(prefix="bc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                f"--user-data-dir={profile.name}", "--window-size=1366,860"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        profile.cleanup()


@pytest.fixture
def page(browser: WebDriver) -> WebDriver:
    """The browser with its console log drained (earlier tests may have logged 401s)."""
    browser.get_log("browser")
    return browser


def wait(driver: WebDriver, condition: Any, what: str) -> Any:
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition, what)


def status_done(driver: WebDriver) -> str:
    def done(d: WebDriver) -> str | bool:
        status = d.find_element(By.ID, "status")
        return status.text if status.get_attribute("data-state") == "done" else False
    text: str = wait(driver, done, "the page's status to say it is done")
    return text


def cards(driver: WebDriver) -> dict[str, WebElement]:
    return {c.get_attribute("data-rule") or "": c
            for c in driver.find_elements(By.CSS_SELECTOR, "#cards .card")}


def screenshot(driver: WebDriver, name: str) -> Path:
    """A full-page screenshot under test-output/ (the window is grown to the page height)."""
    OUTPUT.mkdir(exist_ok=True)
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1366, min(max(height + 40, 860), 6000))
    driver.execute_script("window.scrollTo(0, 0)")
    path = OUTPUT / f"ui-{name}.png"
    assert driver.save_screenshot(str(path))
    driver.set_window_size(1366, 860)
    return path


def no_console_errors(driver: WebDriver) -> None:
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == []


def pick_demo(driver: WebDriver, base: str, name: str) -> str:
    driver.get(base + "/")
    driver.execute_script("window.sessionStorage.clear()")
    Select(driver.find_element(By.ID, "demo")).select_by_value(name)
    driver.find_element(By.ID, "load-demo").click()
    return status_done(driver)


def set_value(element: WebElement, value: str) -> None:
    element.clear()
    element.send_keys(value)
