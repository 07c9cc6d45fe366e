"""Debian's Chromium, headless, driven by Playwright: the one way tests open a page.

The flags keep Chromium off the network it would otherwise call at every start (this machine's
closed network refuses those connections) and let it run as root in CI.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Page, ViewportSize

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_executable() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def headless_page(viewport: ViewportSize | None = None, timeout_ms: float | None = None) -> Iterator[Page]:
    """A new page of a headless Chromium, closed afterwards; `timeout_ms` for every wait on it."""
    from playwright.sync_api import sync_playwright

    executable = chromium_executable()
    if executable is None:
        raise RuntimeError("Chromium is needed: apt-get install chromium (.ci/run installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=viewport)
            if timeout_ms is not None:
                page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()
