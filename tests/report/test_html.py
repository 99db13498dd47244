"""The page builder: exact numbers behind every cell, escaping, embedded images, the 3D viewer."""

from __future__ import annotations

import base64
import json
import re

import numpy as np

from medexplain.data.writers import png_bytes
from medexplain.report.html import Page, format_number


def test_table_cells_carry_exact_values_and_escape_text() -> None:
    page = Page("t")
    page.section("m", "Metrics").table(["method", "dice"], [["<grad>", 0.123456789], ["lrp", float("nan")]])
    text = page.render()
    assert 'data-value="0.123456789"' in text and ">0.1235<" in text
    assert "&lt;grad&gt;" in text and "<grad>" not in text
    assert ">–<" in text


def test_format_number() -> None:
    assert format_number(3) == "3"
    assert format_number(0.000123456) == "0.0001235"
    assert format_number(float("inf")) == "–"


def test_images_are_embedded_and_decode() -> None:
    rgb = np.full((4, 5, 3), 7, np.uint8)
    page = Page("t")
    page.section("g", "Gallery").figures([(png_bytes(rgb), "a"), (png_bytes(rgb), "b")], gallery=True)
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page.render())
    assert len(uris) == 2
    assert all(base64.b64decode(u) == png_bytes(rgb) for u in uris)
    assert "http://" not in page.render() and "https://" not in page.render()


def test_slice_viewer_holds_every_slice() -> None:
    slices = [png_bytes(np.full((3, 3, 3), i, np.uint8)) for i in range(5)]
    page = Page("t")
    page.section("v", "Volume").slice_viewer(slices, "volume")
    text = page.render()
    payload = re.search(r'<script type="application/json">(.*?)</script>', text).group(1)
    assert len(json.loads(payload)) == 5
    assert 'max="4" value="2"' in text
