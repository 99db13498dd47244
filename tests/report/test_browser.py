"""The report in a real browser: headless Chromium opens it from disk, no console errors, every image
renders, and the 3D slice viewer's slider changes the slice shown. A screenshot is kept as a test artefact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medexplain.data.synth import write_deformation
from medexplain.report import build_report
from medexplain.train import TrainConfig, train
from medexplain.workflows.explain import explain_run

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "runs" / "test-artefacts"


@pytest.fixture(scope="module")
def report_3d(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("volume")
    data = write_deformation(root / "data", n=12, spatial_dims=3, size=24, seed=0, show_progress=False)
    run = root / "model"
    train(TrainConfig("resnet18", epochs=1, batch_size=4, seed=0), data, run, progress=False)
    explain_run(run, data, ["gradcam"], root / "maps", split="test", progress=False)
    return build_report(root)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")
    return path


def test_report_renders_in_chromium_and_the_slider_moves(report_3d: Path) -> None:
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
            page.goto(report_3d.resolve().as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
            assert widths and min(widths) > 0
            viewer = page.locator(".viewer").first
            before = viewer.locator("img").get_attribute("src")
            label_before = viewer.locator("span").inner_text()
            slider = viewer.locator("input[type=range]")
            slider.evaluate("s => { s.value = 0; s.dispatchEvent(new Event('input')); }")
            after = viewer.locator("img").get_attribute("src")
            assert after != before
            assert viewer.locator("span").inner_text() != label_before
            assert viewer.locator("span").inner_text().startswith("slice 0 /")
            assert page.evaluate("() => document.querySelector('.viewer img').naturalWidth") > 0
            header = page.locator("th").first
            header.click()
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTEFACTS / "report-3d.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
