"""A self-contained HTML page: inline CSS and vanilla JS, images embedded as data URIs, no network.

Every number shown in a table cell also carries its exact value in ``data-value`` so tests (and curious
users) can check the page against the run's CSV/JSON files.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d1e0;font-size:13px}
nav{padding:8px 32px;background:#fff;border-bottom:1px solid #dde2ea;font-size:13px;position:sticky;top:0;z-index:2}
nav a{margin-right:14px;color:#2456c7;text-decoration:none}
main{padding:8px 32px 40px;max-width:1400px}
section{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:14px 20px;margin:18px 0}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:15px;margin:14px 0 6px}
p,li,dd,dt{font-size:14px;line-height:1.45}.note{color:#8a5a00;background:#fff6e0;padding:6px 10px;border-radius:4px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 12px}
th,td{border-bottom:1px solid #e6e9ef;padding:4px 10px;text-align:right}th{background:#eef1f6;cursor:pointer}
th:first-child,td:first-child{text-align:left}th.sortable:after{content:" \\21C5";color:#98a2b3}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
.pass{color:#116329;font-weight:600}.fail{color:#a40e26;font-weight:600}.na{color:#6a737d}
figure{margin:0}figure img{width:100%;image-rendering:pixelated;border-radius:4px;display:block}
figcaption{font-size:12px;color:#4a5568;margin-top:3px}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}.row>figure{max-width:560px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{font-weight:600}dd{margin:0}
.viewer{max-width:420px}.viewer input{width:100%}
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, column){
    th.classList.add('sortable');
    th.addEventListener('click', function(){
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var ascending = th.dataset.order !== 'asc'; th.dataset.order = ascending ? 'asc' : 'desc';
      rows.sort(function(a, b){
        var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        var nx = parseFloat(x), ny = parseFloat(y);
        var cmp = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
        return ascending ? cmp : -cmp;
      });
      rows.forEach(function(row){ body.appendChild(row); });
    });
  });
});
document.querySelectorAll('.viewer').forEach(function(viewer){
  var slices = JSON.parse(viewer.querySelector('script').textContent);
  var img = viewer.querySelector('img'), slider = viewer.querySelector('input'), label = viewer.querySelector('span');
  slider.addEventListener('input', function(){
    img.src = slices[slider.value]; label.textContent = 'slice ' + slider.value + ' / ' + (slices.length - 1);
  });
});
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def format_number(value: float) -> str:
    """Four significant digits; integers as integers; NaN as an en dash."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "–"
    return f"{value:.4g}"


def _cell(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        exact = repr(float(value)) if isinstance(value, float) else str(value)
        return f'<td data-value="{html.escape(exact)}">{format_number(value)}</td>'
    text = html.escape(str(value))
    return f'<td data-value="{text}">{text}</td>'


@dataclass
class Section:
    """One section of the page; methods append HTML fragments in order."""

    anchor: str
    title: str
    parts: list[str] = field(default_factory=list)

    def paragraph(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def heading(self, text: str) -> None:
        self.parts.append(f"<h3>{html.escape(text)}</h3>")

    def facts(self, items: dict[str, object]) -> None:
        rows = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in items.items())
        self.parts.append(f"<dl>{rows}</dl>")

    def figure(self, png: bytes, caption: str) -> None:
        self.figures([(png, caption)])

    def figures(self, items: Sequence[tuple[bytes, str]], gallery: bool = False) -> None:
        inner = "".join(self._figure(png, caption) for png, caption in items)
        self.parts.append(f'<div class="{"gallery" if gallery else "row"}">{inner}</div>')

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[object]], caption: str = "") -> None:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.parts.append(f'<table class="sortable">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')

    def slice_viewer(self, slices: Sequence[bytes], caption: str) -> None:
        """A 3D viewer: one PNG per slice, a slider picks the slice shown (vanilla JS, no network)."""
        uris = [data_uri(png) for png in slices]
        middle = len(uris) // 2
        payload = json.dumps(uris).replace("</", "<\\/")
        self.parts.append(
            f'<figure class="viewer"><img src="{uris[middle]}" alt="{html.escape(caption)}">'
            f'<input type="range" min="0" max="{len(uris) - 1}" value="{middle}" aria-label="slice">'
            f"<figcaption>{html.escape(caption)} <span>slice {middle} / {len(uris) - 1}</span></figcaption>"
            f'<script type="application/json">{payload}</script></figure>'
        )

    @staticmethod
    def _figure(png: bytes, caption: str) -> str:
        alt = html.escape(caption)
        return f'<figure><img src="{data_uri(png)}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'

    def render(self) -> str:
        return f'<section id="{self.anchor}"><h2>{html.escape(self.title)}</h2>{"".join(self.parts)}</section>'


@dataclass
class Page:
    """The report page: a header, a navigation bar and sections."""

    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def section(self, anchor: str, title: str) -> Section:
        section = Section(anchor, title)
        self.sections.append(section)
        return section

    def render(self) -> str:
        nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in self.sections)
        body = "".join(s.render() for s in self.sections)
        return (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{html.escape(self.title)}</h1><p>{html.escape(self.subtitle)}</p></header>"
            f"<nav>{nav}</nav><main>{body}</main><script>{SCRIPT}</script></body></html>"
        )
