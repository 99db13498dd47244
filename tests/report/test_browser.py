"""The report in a real browser: headless Chromium opens it from disk, no console errors, every image
renders, and the 3D slice viewer's slider changes the slice shown. A screenshot is kept as a test artefact."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.report._browser import opened_report

from medexplain.data.synth import write_deformation
from medexplain.report import build_report
from medexplain.train import TrainConfig, train
from medexplain.workflows.explain import explain_run


@pytest.fixture(scope="module")
def report_3d(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("volume")
    data = write_deformation(root / "data", n=12, spatial_dims=3, size=24, seed=0, show_progress=False)
    run = root / "model"
    train(TrainConfig("resnet18", epochs=1, batch_size=4, seed=0), data, run, progress=False)
    explain_run(run, data, ["gradcam"], root / "maps", split="test", progress=False)
    return build_report(root)


def test_report_renders_in_chromium_and_the_slider_moves(report_3d: Path) -> None:
    with opened_report(report_3d, "report-3d.png") as (page, errors):
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
        page.locator("th").first.click()
    assert errors == []
