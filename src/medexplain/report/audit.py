"""The audit's section of the report: the verdict first (methods x criteria, with the numbers), then the best and
worst images of the leading method, then the baselines; the explanations and scores follow as their own
sections."""

from __future__ import annotations

import math
from pathlib import Path

from medexplain.files import read_json
from medexplain.report.discover import Component
from medexplain.report.html import Page
from medexplain.report.sections import anchor, dataset_images, map_figure

CRITERIA = (("localises", "localises"), ("faithful", "faithful"), ("randomisation", "passes randomisation"))
SHOWN = 3


def _cell(criterion: dict) -> str:
    verdict = criterion.get("verdict", "n/a")
    if "better_on" in criterion:
        return f"{verdict} ({len(criterion['better_on'])}/{len(criterion['of'])})"
    if "similarity" in criterion:
        return f"{verdict} (similarity {criterion['similarity']:.2f})"
    return verdict


def audit_section(page: Page, component: Component) -> None:
    """Verdict table, leading method's best and worst images, baselines."""
    document = read_json(component.path / "verdict.json", format_prefix="medexplain-audit/")
    primary = document["rules"]["primary"]
    title = f"Verdict: which explanation can be trusted ({component.name})"
    section = page.section(f"audit-{anchor(component)}", title)
    section.paragraph(
        f"Model {document['model']} on {document['data']} ({document['split']} split), {_against(document)}"
        f"{_explained(document)}. Each method is compared with every baseline on the "
        f"same images ({document['rules']['test']}-corrected, alpha {document['rules']['alpha']}): localises = "
        f"{document['rules']['localises']}; faithful = {document['rules']['faithful']}; passes randomisation = "
        f"{document['rules']['randomisation']}. Methods in ranking order."
    )
    rows = {row["method"]: row for row in document["verdict"]}
    table = []
    for method in document["ranking"]:
        row = rows[method]
        metric = row["metrics"].get(primary, {})
        table.append([method, *(_cell(row[key]) for key, _ in CRITERIA), ", ".join(row.get("shortcuts", [])) or
                      "none", metric.get("mean", math.nan), metric.get("ci_low", math.nan),
                      metric.get("ci_high", math.nan)])  # fmt: skip
    section.table(["method", *(title for _, title in CRITERIA), "relevance out of proportion on", primary,
                   "CI low", "CI high"], table)  # fmt: skip
    if document.get("not_applicable"):
        section.table(["not applicable", "why"], [[name, why] for name, why in document["not_applicable"].items()])
    _shortcuts(section, document)
    leader = document["ranking"][0]
    _best_and_worst(section, component.path, leader, primary)
    baselines = document.get("baselines", {})
    metrics = sorted({m for values in baselines.values() for m in values})
    if baselines:
        section.heading("Baselines (what a method has to beat)")
        section.table(["baseline", *metrics],
                      [[name, *(values.get(m, {}).get("mean", math.nan) for m in metrics)]
                       for name, values in baselines.items()])  # fmt: skip


def _against(document: dict) -> str:
    if document["mask"] is None:
        return "without masks (nothing to localise against: faithfulness, randomisation and shortcuts only)"
    return f"against the {document['mask']!r} masks"


def _explained(document: dict) -> str:
    """What the maps explain when it is not the predicted class: a class, or a multi-label model's label."""
    explains = document.get("explains", "the predicted class")
    return "" if explains == "the predicted class" else f"; the maps explain {explains}"


def _shortcuts(section, document: dict) -> None:
    """Per region: each map's share of positive relevance there against the region's share of the image."""
    shortcuts = document.get("shortcuts") or {}
    if not shortcuts:
        return
    section.heading("Shortcuts: relevance on regions that should not decide")
    section.paragraph(f"Density ratio: how many times more relevance a pixel of the region holds than a pixel "
                      f"outside it (1: in proportion); flagged: {document['rules']['shortcuts']}.")  # fmt: skip
    rows = []
    for region, per_method in shortcuts.items():
        for method, values in per_method.items():
            low, high = values["ratio_ci"]
            rows.append([region, method, values["relevance_share"], values["area_share"], values["ratio"], low, high,
                         "flagged" if values["flagged"] else ""])  # fmt: skip
    section.table(["region", "map", "relevance share", "area share", "density ratio", "CI low", "CI high", ""], rows)


def _best_and_worst(section, folder: Path, method: str, metric: str) -> None:
    """The leading method's maps on its best and worst images by the primary metric."""
    from medexplain.workflows.audit import audit_scores
    from medexplain.workflows.explanations import load_explanations

    scores = audit_scores(folder).get(metric, {}).get(method, {})
    stored = load_explanations(folder / "explanations")
    images = dataset_images(stored)
    items = {item.id: item for item in stored.items}
    ranked = sorted((i for i in scores if i in items and not math.isnan(scores[i])), key=lambda i: -scores[i])
    for title, chosen in (("best", ranked[:SHOWN]), ("worst", ranked[::-1][:SHOWN])):
        entries = []
        for item_id in chosen:
            item = items[item_id]
            maps = stored.load(item, method).numpy()
            image, mask = images(item.index) if images else (maps[:1] * 0, None)
            caption = f"{item_id} · {metric} {scores[item_id]:.3f}"
            entries += map_figure(section, image, maps[0], mask, caption, f"{method} ({title}) · {caption}")
        if entries:
            section.heading(f"{method}: its {title} images by {metric} (mask outlined)")
            section.figures(entries, gallery=True)
