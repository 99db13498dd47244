"""``build_report(run_dir)``: one self-contained HTML page for any medexplain run folder."""

from __future__ import annotations

import os
from pathlib import Path

from medexplain.errors import MedexplainError
from medexplain.files import write_text
from medexplain.report.discover import discover
from medexplain.report.html import Page
from medexplain.report.sections import BUILDERS, provenance_section

REPORT_FILE = "report.html"
KIND_ORDER = ("data", "train", "explanations", "evaluation", "concepts", "bottleneck", "simulator", "simulation")


def build_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``run_dir/report.html``) and return its path.

    Every component found (training runs, explanations, evaluations, concept analyses, simulators) gets its
    sections; a component that cannot be read (an interrupted run, say) is listed as incomplete rather than
    stopping the report. A folder with no medexplain output at all is a :class:`MedexplainError`.
    """
    root = Path(run_dir)
    components = discover(root)
    page = Page(f"medexplain report: {root.resolve().name}", subtitle=str(root.resolve()))
    overview = page.section("overview", "Contents")
    overview.table(["part", "kind", "folder"], [[c.name, c.kind, str(c.path)] for c in components])
    incomplete: list[list[str]] = []
    for component in sorted(components, key=lambda c: (KIND_ORDER.index(c.kind), c.name)):
        builder = BUILDERS.get(component.kind)
        if builder is None:
            continue
        try:
            builder(page, component)
        except MedexplainError as error:
            incomplete.append([component.name, component.kind, str(error)])
    if incomplete:
        overview.note("Some parts are incomplete (an interrupted or partial run); the rest of the report stands.")
        overview.table(["part", "kind", "problem"], incomplete)
    provenance_section(page, components, root)
    target = Path(out) if out is not None else root / REPORT_FILE
    write_text(target, page.render())
    return target
