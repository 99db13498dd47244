"""``build_report(run_dir)``: one self-contained HTML page for any medexplain run folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from medexplain.errors import MedexplainError
from medexplain.files import write_text
from medexplain.report.audit import audit_section
from medexplain.report.discover import Component, discover
from medexplain.report.html import Page
from medexplain.report.sections import (
    bottleneck_section,
    comparison_table,
    concepts_section,
    evaluation_section,
    explanations_section,
    provenance_section,
    simulation_section,
    simulator_section,
    train_section,
)

REPORT_FILE = "report.html"
BUILDERS: dict[str, Callable[[Page, Component], None]] = {
    "audit": audit_section,
    "train": train_section,
    "explanations": explanations_section,
    "evaluation": evaluation_section,
    "concepts": concepts_section,
    "bottleneck": bottleneck_section,
    "simulator": simulator_section,
    "simulation": simulation_section,
}
"""One builder per kind of component; each reads only the files its component wrote."""
KIND_ORDER = ("audit", "data", "train", "explanations", "evaluation", "concepts", "bottleneck", "simulator",
              "simulation")  # fmt: skip


def build_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``run_dir/report.html``) and return its path.

    An audit's verdict comes first; then the contents with one comparison table across every evaluation (models,
    methods and baselines side by side); then each component's sections. A component that cannot be read (an
    interrupted run, say) is listed as incomplete rather than stopping the report. A folder with no medexplain
    output at all is a :class:`MedexplainError`.
    """
    root = Path(run_dir)
    components = sorted(discover(root), key=lambda c: (KIND_ORDER.index(c.kind), c.name))
    page = Page(f"medexplain report: {root.resolve().name}", subtitle=str(root.resolve()))
    incomplete: list[list[str]] = []

    def build(component: Component) -> None:
        try:
            BUILDERS[component.kind](page, component)
        except (MedexplainError, KeyError, ValueError) as error:
            incomplete.append([component.name, component.kind, " ".join(str(error).split())])

    for component in (c for c in components if c.kind == "audit"):
        build(component)
    overview = page.section("overview", "Contents")
    overview.table(["part", "kind", "folder"], [[c.name, c.kind, str(c.path)] for c in components])
    comparison_table(overview, [c for c in components if c.kind == "evaluation"])
    for component in (c for c in components if c.kind != "audit" and c.kind in BUILDERS):
        build(component)
    if incomplete:
        overview.note("Some parts are incomplete (an interrupted or partial run); the rest of the report stands.")
        overview.table(["part", "kind", "problem"], incomplete)
    provenance_section(page, components, root)
    target = Path(out) if out is not None else root / REPORT_FILE
    write_text(target, page.render())
    return target
