"""Headless Chromium for the status page tests: Debian's chromium and chromedriver.

Selenium is driven with the driver path given explicitly, so Selenium Manager never
looks for (or downloads) a browser. Selenium calls block, and the proxy under test runs
on the test's own event loop, so every call goes through a thread (`Browser`'s async
methods) while the loop keeps serving the page's requests.
"""

import asyncio
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
T = TypeVar("T")


def available() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists()


def start_chrome(width: int = 1280, height: int = 900) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a throwaway profile; quit and removed afterwards."""
    profile = tempfile.mkdtemp(prefix="m3u-proxy-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console, CSP reports
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Browser:
    """Async wrappers over one driver: each Selenium call runs in a worker thread."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def open(self, url: str) -> None:
        await self.call(self.driver.get, url)

    async def script(self, source: str, *args: Any) -> Any:
        return await self.call(self.driver.execute_script, source, *args)

    async def wait(self, condition: Callable[[], T], seconds: float, what: str) -> T:
        """Poll ``condition`` (run in the thread) until it returns something truthy."""

        def check(_: Any) -> T:
            return condition()

        def run() -> T:
            return WebDriverWait(self.driver, seconds, poll_frequency=0.1).until(check)

        try:
            return await self.call(run)
        except TimeoutException as exc:
            raise AssertionError(f"not within {seconds} s: {what}") from exc

    def find(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    async def text(self, css: str) -> str:
        """The rendered text of the first element matching ``css`` ('' when none)."""
        return str(
            await self.script(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
                css,
            )
        )

    async def visible(self, css: str) -> bool:
        return bool(
            await self.script(
                "const e = document.querySelector(arguments[0]);"
                "return !!e && !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);",
                css,
            )
        )

    async def click(self, css: str) -> None:
        def run() -> None:
            self.driver.find_element(By.CSS_SELECTOR, css).click()

        await self.call(run)

    async def type(self, css: str, text: str) -> None:
        def run() -> None:
            self.driver.find_element(By.CSS_SELECTOR, css).send_keys(text)

        await self.call(run)

    async def console_errors(self) -> list[str]:
        """Console messages at error level since the last call (CSP violations among them)."""
        entries = await self.call(self.driver.get_log, "browser")
        return [str(e["message"]) for e in entries if e["level"] == "SEVERE"]

    async def screenshot(self, path: Path) -> Path:
        await self.call(self.driver.save_screenshot, str(path))
        return path

    async def color_scheme(self, scheme: str) -> None:
        """Emulate the operator's light/dark preference (``prefers-color-scheme``)."""
        features = [{"name": "prefers-color-scheme", "value": scheme}]
        await self.call(
            self.driver.execute_cdp_cmd, "Emulation.setEmulatedMedia", {"features": features}
        )

    async def viewport(self, width: int, height: int, *, mobile: bool = True) -> None:
        """Emulate a screen of this size (a phone by default), device pixel ratio 1."""
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
        await self.call(self.driver.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride", metrics)

    async def full_screenshot(self, path: Path, width: int = 1280) -> Path:
        """The whole page, however long, at ``width`` CSS pixels."""
        height = int(await self.script("return document.documentElement.scrollHeight;"))
        await self.viewport(width, height, mobile=False)
        try:
            return await self.screenshot(path)
        finally:
            await self.call(self.driver.execute_cdp_cmd, "Emulation.clearDeviceMetricsOverride", {})
