"""Headless Chromium (Debian's, installed by `make test`) opening a report from disk, for the browser tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "runs" / "test-artefacts"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")
    return path


@contextmanager
def opened_report(report: Path, screenshot: str) -> Iterator[tuple[object, list[str]]]:
    """``(page, errors)`` of ``report`` loaded in a 1280 x 900 page; ``errors`` collects console errors and page
    exceptions; on a clean exit the full page is saved as ``runs/test-artefacts/<screenshot>``."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=_chromium(),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(report.resolve().as_uri(), wait_until="load")
            yield page, errors
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTEFACTS / screenshot), full_page=True)
        finally:
            browser.close()
