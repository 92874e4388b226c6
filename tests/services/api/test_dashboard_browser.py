"""The store dashboard in a real headless browser (Debian's chromium, driven by selenium)
after a whole replay through the real pipeline: the page shows the replay's numbers.

Screenshots of what the browser rendered are written to docs/dashboard-*.png.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from facestream.core.engine import FaceEngine
from facestream.core.gallery import Gallery
from facestream.devstack.config import StackError
from facestream.devstack.install import ensure_debian_package
from facestream.runtime.settings import PipelineSettings
from facestream.services.api.app import create_app
from facestream.services.api.settings import ApiSettings
from facestream.services.sink.reader import StoreReader
from facestream.services.sink.settings import SinkSettings
from facestream.tools import counting, simulate
from facestream.tools.store_eval import evaluate, fresh_settings
from tests.services.api.live_server import serving

KEY = "browser-test-key-4c1e8b27d9"
DOCS = Path(__file__).resolve().parents[3] / "docs"
STORES = (
    simulate.StorePlan("store-7", "Europe/Paris"),
    simulate.StorePlan("store-12", "America/New_York"),
)


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    """Debian's chromium and its driver, installed with apt-get when missing (as root)."""
    try:
        browser = ensure_debian_package("chromium", "chromium", None, ("/usr/bin/chromium",))
        driver = ensure_debian_package(
            "chromedriver", "chromium-driver", None, ("/usr/bin/chromedriver",)
        )
    except StackError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"cannot install chromium: {exc}")
        pytest.skip(f"chromium not available: {exc}")
    return browser, driver


@pytest.fixture
def browser(chromium: tuple[str, str]) -> Iterator[WebDriver]:
    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--force-device-scale-factor=1",
        "--lang=en-GB",
    ):
        options.add_argument(arg)
    # The Service names the driver, so selenium never tries to download one.
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def replayed(
    lfw: Path,
    engine: FaceEngine,
    live_stack: PipelineSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[PipelineSettings, counting.CountingReport]:
    """Two stores in two time zones over two days, replayed through the whole pipeline."""
    scenario = simulate.build(lfw, simulate.Plan(stores=STORES, seed=7), engine)
    _, manifest, truth = scenario.write(tmp_path_factory.mktemp("dashboard"))
    settings = fresh_settings(live_stack, "dashboard")
    report = evaluate(manifest, truth, settings, lambda _: None, timeout=600)
    return settings, report


def shoot(driver: WebDriver, name: str) -> Path:
    """A screenshot of the whole page at a 1400 px wide viewport."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    metrics = {"width": 1400, "height": int(height), "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    path = DOCS / name
    driver.save_screenshot(str(path))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def test_the_dashboard_shows_the_replay(
    replayed: tuple[PipelineSettings, counting.CountingReport],
    engine: FaceEngine,
    browser: WebDriver,
) -> None:
    settings, report = replayed
    zones = {s.store_id: s.timezone for s in STORES}
    reader = StoreReader(settings, SinkSettings(store_timezones=zones))
    app = create_app(ApiSettings(api_key=KEY), Gallery(), engine, stores=reader)
    # The last day of the busiest store: it has returning visitors.
    days = sorted(report.days, key=lambda d: (d.date, d.measured["pv"]))
    shown = days[-1]
    figures: dict[str, Any] = shown.measured
    assert figures["pv"] > 0
    # Pages navigate (login, then the dashboard) while a wait polls them: an element found just
    # before the page changes goes stale, which only means "not yet".
    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))
    with serving(app) as base:
        browser.get(f"{base}/dashboard?store={shown.store}&date={shown.date}")
        # Not logged in: the login page, which then leads back to the same view.
        wait.until(lambda d: "/login" in d.current_url)
        shoot(browser, "dashboard-login.png")
        browser.find_element(By.ID, "api_key").send_keys(KEY)
        browser.find_element(By.ID, "login-submit").click()
        loaded = f"{shown.store}/{shown.date}"
        wait.until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == loaded
        )
        assert text(browser, "kpi-pv") == str(figures["pv"])
        assert text(browser, "kpi-uv") == str(figures["uv"])
        assert text(browser, "kpi-new") == str(figures["new"])
        assert text(browser, "kpi-returning") == str(figures["returning"])
        assert text(browser, "kpi-members") == str(len(figures["members"]))
        hourly = browser.find_element(By.ID, "chart").get_attribute("data-hourly") or ""
        assert sum(int(n) for n in hourly.split(",")) == figures["pv"]
        bars = browser.find_elements(By.CSS_SELECTOR, "#chart rect.bar")
        assert 0 < len(bars) <= 24
        # The stores side by side, each with its own figures of that local day.
        rows = browser.find_elements(By.CSS_SELECTOR, "#stores tbody tr")
        assert sorted(str(r.get_attribute("data-store")) for r in rows) == sorted(zones)
        for d in report.days:
            if d.date == shown.date:
                row = browser.find_element(By.CSS_SELECTOR, f'#stores tr[data-store="{d.store}"]')
                cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
                assert cells[1:5] == [str(d.measured[k]) for k in ("pv", "uv", "new", "returning")]
        recent = browser.find_elements(By.CSS_SELECTOR, "#recent tbody tr")
        assert len(recent) == min(figures["pv"], 20)
        # Member arrivals come over the live feed (the backlog of the store's latest).
        if any(d.measured["members"] for d in report.days if d.store == shown.store):
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#arrivals li"))
            wait.until(lambda d: d.find_element(By.ID, "live-state").text == "live")
        assert "Europe" in text(browser, "subtitle") or "America" in text(browser, "subtitle")
        shoot(browser, "dashboard-store.png")
        # /docs renders from the server's own copy of Swagger UI (this machine has no internet).
        browser.get(f"{base}/docs")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
        assert "facestream" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info").text
