"""Report sections, one builder per component kind; each reads only the files its component wrote."""

from __future__ import annotations

import csv
import hashlib
import json
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from medexplain.data.writers import png_bytes
from medexplain.errors import MedexplainError
from medexplain.files import read_json
from medexplain.report.discover import Component
from medexplain.report.figures import (
    confusion_matrix_png,
    curves_png,
    histograms_png,
    line_png,
    overlay,
    upscale_nearest,
)
from medexplain.report.html import Page, Section

GALLERY_ITEMS = 6
MAX_SLICES = 48


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dictionaries (a missing file is a :class:`MedexplainError`)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError as error:
        raise MedexplainError(f"{path}: cannot read ({error.strerror})") from None


def number(text: str) -> float | str:
    """A CSV cell as a float when it is one, else the text."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def train_section(page: Page, component: Component) -> None:
    """Model card, data card, classification metrics per split, training curves, confusion matrix."""
    config = read_json(component.path / "config.json")
    if config.get("status") == "training":
        raise MedexplainError(f"{component.path}: training has not finished (resume it to complete the run)")
    section = page.section(f"train-{anchor(component)}", f"Model: {config.get('model')} ({component.name})")
    args = config.get("model_args", {})
    section.heading("Model card")
    section.facts(
        {
            "architecture": config.get("model"),
            "arguments": ", ".join(f"{k}={v}" for k, v in args.items()),
            "task": config.get("task"),
            "classes": ", ".join(config.get("class_names") or []) or "-",
            "labels": ", ".join(config.get("label_names") or []) or "-",
            "preprocessing": json.dumps(config.get("preprocessing", {})),
            "training": ", ".join(f"{k}={v}" for k, v in config.get("training", {}).items() if k != "data"),
        }
    )
    section.heading("Data card")
    section.facts({"source": config.get("data"), **_data_card(config.get("data"))})
    metrics = {split: values for split, values in config.get("metrics", {}).items() if isinstance(values, dict)}
    if metrics:
        names = sorted({k for values in metrics.values() for k, v in values.items() if _scalar(v)})
        section.heading("Classification metrics")
        section.table(
            ["split", *names],
            [[split, *(values.get(n, float("nan")) for n in names)] for split, values in metrics.items()],
        )
    elif "training" not in config:
        section.note("Weights saved as they are (models.save_run): trained elsewhere, no training record here.")
    else:
        section.note("No final metrics: the run has not finished (config.json carries none yet).")
    history = component.path / "metrics.csv"
    if history.is_file():
        rows = read_csv(history)
        curves = _training_curves(rows)
        if curves:
            section.figures(curves)
    predictions = component.path / "predictions.csv"
    if predictions.is_file():
        rows = read_csv(predictions)
        matrix = _confusion(rows, len(config.get("class_names") or []))
        if matrix is not None:
            names = config.get("class_names") or [str(i) for i in range(len(matrix))]
            section.figure(confusion_matrix_png(matrix, names), f"Confusion matrix on the {rows[0]['split']} split")


def explanations_section(page: Page, component: Component) -> None:
    """A gallery per method: image, mask outline and map overlay for the first few items; 3D as slice viewers."""
    from medexplain.workflows.explanations import load_explanations

    stored = load_explanations(component.path)
    section = page.section(f"maps-{anchor(component)}", f"Explanations ({component.name})")
    section.facts({"model": stored.header.get("model"), "data": stored.header.get("data"),
                   "split": stored.header.get("split"), "items": len(stored.items),
                   "methods": ", ".join(stored.methods)})  # fmt: skip
    images = dataset_images(stored)
    if images is None:
        section.note("The dataset these maps explain is not readable here: maps are shown without their images.")
    for method in stored.methods:
        section.heading(method)
        entries = []
        for item in stored.items[:GALLERY_ITEMS]:
            if method not in item.maps:
                continue
            maps = stored.load(item, method).numpy()
            image, mask = images(item.index) if images else (np.zeros((1, *maps.shape[1:])), None)
            caption = f"{item.id} · label {item.label} · target {item.targets[0] if item.targets else '?'}"
            entries += map_figure(section, image, maps[0], mask, caption, f"{method} · {caption}")
        if entries:
            section.figures(entries, gallery=True)


def map_figure(
    section, image: np.ndarray, relevance: np.ndarray, mask: np.ndarray | None, caption: str, viewer_caption: str
) -> list[tuple[bytes, str]]:
    """A map over its image (mask outlined): a 2D map ``(H, W)`` becomes a gallery entry (returned), a 3D one
    ``(D, H, W)`` a slice viewer added to ``section`` (nothing returned)."""
    if relevance.ndim == 2:
        return [(png_bytes(upscale_nearest(overlay(image, relevance, mask))), caption)]
    section.slice_viewer(volume_slices(image, relevance, mask), viewer_caption)
    return []


def evaluation_section(page: Page, component: Component) -> None:
    """Metric table (mean and 95 % bootstrap interval per method), chance levels, score distributions."""
    section = page.section(f"scores-{anchor(component)}", f"Evaluation ({component.name})")
    rows = read_csv(component.path / "summary.csv")
    document = read_json(component.path / "summary.json")
    chance = document.get("chance", {})
    section.paragraph(
        "Mean per method and metric with its 95 % bootstrap interval over images; 'excluded' counts images "
        "without a lesion (empty mask), which localisation metrics cannot score."
    )
    columns = ["method", "metric", "category", "higher is better", "n", "excluded", "mean", "CI low", "CI high"]
    keys = ["method", "metric", "category", "higher_is_better", "n", "excluded", "mean", "ci_low", "ci_high"]
    section.table(
        columns, [[number(row[k]) if k not in ("method", "metric") else row[k] for k in keys] for row in rows]
    )
    if chance:
        section.heading("Chance levels")
        section.paragraph(
            "A map that points at random lands on a lesion with probability equal to the lesion's share of the "
            "image: a pointing-game score clearly above this level means the maps find lesions."
        )
        section.table(["metric", "chance level"], [[name, value] for name, value in chance.items()])
    curves = document.get("curves", {})
    modes = sorted({mode for per_method in curves.values() for mode in per_method})
    if modes:
        section.heading("Deletion and insertion curves")
        section.figures(
            [
                (
                    curves_png(
                        {method: np.array([c[mode]]) for method, c in curves.items() if mode in c},
                        "fraction of pixels perturbed (most relevant first)",
                        "target probability",
                        mode,
                    ),
                    f"Mean {mode} curve per method",
                )
                for mode in modes
            ]
        )
    per_sample = read_csv(component.path / "per_sample.csv")
    figures = []
    for metric in sorted({row["metric"] for row in per_sample}):
        values: dict[str, list[float]] = {}
        for row in per_sample:
            if row["metric"] == metric:
                values.setdefault(row["method"], []).append(float(row["score"] or "nan"))
        arrays = {method: np.array(v) for method, v in values.items()}
        if any(np.isfinite(v).any() for v in arrays.values()):
            figures.append((histograms_png(arrays, metric, f"{metric} per image"), f"Distribution of {metric}"))
    if figures:
        section.heading("Score distributions")
        section.figures(figures)


def concepts_section(page: Page, component: Component) -> None:
    """Per-concept probe quality and influence, the inconsistency ROC, and the per-image table."""
    section = page.section(f"concepts-{anchor(component)}", f"Concepts ({component.name})")
    summary = read_json(component.path / "summary.json")
    section.facts({k: v for k, v in summary.items() if _scalar(v) or isinstance(v, str)})
    for table, title in (("concepts", "Probes per concept"), ("influence", "Concept influence on each class")):
        path = component.path / f"{table}.csv"
        if path.is_file():
            rows = read_csv(path)
            if rows:
                section.heading(title)
                section.table(list(rows[0]), [[number(v) for v in row.values()] for row in rows])
    figures = []
    roc = component.path / "inconsistency_roc.csv"
    if roc.is_file() and (rows := read_csv(roc)):
        figures.append((roc_png(rows), "Inconsistent explanations as a detector of wrong predictions"))
    curve = component.path / "learning_curve.csv"
    if curve.is_file() and (rows := read_csv(curve)):
        figures.append((learning_curve_png(rows), "Probe AUROC against the number of annotated examples"))
    if figures:
        section.figures(figures)
    gallery = component.path / "maps" / "concept_maps.json"
    if gallery.is_file():
        _concept_map_gallery(section, gallery)
    images = component.path / "images.csv"
    if images.is_file():
        rows = read_csv(images)[:20]
        if rows:
            section.heading("Per-image explanations (first 20)")
            section.table(list(rows[0]), [[number(v) for v in row.values()] for row in rows])


def roc_png(rows: list[dict[str, str]]) -> bytes:
    """ROC curves (one per layer) of inconsistency as a detector of wrong predictions (``inconsistency_roc.csv``)."""
    series = {}
    for layer in dict.fromkeys(row["layer"] for row in rows):
        mine = [row for row in rows if row["layer"] == layer]
        fpr, tpr = (np.array([float(row[k]) for row in mine]) for k in ("fpr", "tpr"))
        series[f"{layer} (AUROC {float(mine[0]['auroc']):.3f})"] = (fpr, tpr)
    series["chance"] = (np.array([0.0, 1.0]), np.array([0.0, 1.0]))
    return line_png(series, "false positive rate (right predictions flagged)",
                    "true positive rate (wrong predictions flagged)", "Inconsistent explanations vs wrong predictions")


def learning_curve_png(rows: list[dict[str, str]]) -> bytes:
    """Mean held-out probe AUROC against the number of annotated training examples, one line per concept."""
    series = {}
    for layer, concept in dict.fromkeys((row["layer"], row["concept"]) for row in rows):
        mine = [row for row in rows if row["layer"] == layer and row["concept"] == concept]
        sizes = sorted({int(row["size"]) for row in mine})
        means = [np.nanmean([float(row["auroc"] or "nan") for row in mine if int(row["size"]) == n]) for n in sizes]
        series[f"{concept} ({layer})"] = (np.array(sizes), np.array(means))
    return line_png(series, "annotated training examples", "held-out probe AUROC", "Concept probe learning curves")


def _concept_map_gallery(section, path: Path) -> None:
    """Per concept, the held-out images where its probe is most confident, with that concept's map."""
    from medexplain.workflows.explanations import load_explanations

    document = read_json(path)
    stored = load_explanations(path.parent)
    images = dataset_images(stored)
    items = {item.id: item for item in stored.items}
    section.heading(f"Concept maps (layer {document.get('layer')}): where each concept is found")
    section.paragraph(
        "The concept's probe applied at every position of the layer, upsampled like a class activation map "
        "(signed, not normalised). Shown for the held-out images where the probe is most confident."
    )
    for concept, shown in document.get("concepts", {}).items():
        entries = []
        for entry in shown:
            item = items.get(entry["id"])
            if item is None or f"concept-{concept}" not in item.maps:
                continue
            maps = stored.load(item, f"concept-{concept}").numpy()
            image = images(item.index)[0] if images else np.zeros((1, *maps.shape[1:]))
            annotated = entry.get("annotated")
            expert = "not annotated" if annotated is None else ("present" if annotated > 0.5 else "absent")
            caption = f"{concept} · {item.id} · p = {entry['probability']:.2f} · expert: {expert}"
            entries += map_figure(section, image, maps[0], None, caption, caption)
        if entries:
            section.figures(entries, gallery=True)


def bottleneck_section(page: Page, component: Component) -> None:
    """A concept bottleneck: its readable weights, concept AUROCs and the test-time intervention curve."""
    summary = read_json(component.path / "bottleneck.json")
    section = page.section(f"bottleneck-{anchor(component)}", f"Concept bottleneck ({component.name})")
    section.facts(
        {
            "training": summary.get("mode"),
            "concepts": ", ".join(summary.get("concepts", [])),
            "classes": ", ".join(summary.get("classes", [])),
            "linear layer C (chosen on validation)": summary.get("class_C"),
            **{f"skipped {name}": reason for name, reason in summary.get("skipped_concepts", {}).items()},
        }
    )
    for table, title in (
        ("weights.csv", "Linear layer: weight of each concept per class (log-odds it adds, two classes)"),
        ("concept_scores.csv", "Concept AUROC against the experts' annotations"),
    ):
        rows = read_csv(component.path / table)
        if rows:
            section.heading(title)
            section.table(list(rows[0]), [[number(v) for v in row.values()] for row in rows])
    rows = read_csv(component.path / "intervention.csv")
    if rows:
        section.heading("Test-time intervention")
        section.paragraph(
            "Class AUROC when the k least certain predicted concepts of each image are replaced by the experts' "
            "values (Koh et al., ICML 2020); k = all is the linear layer applied to the expert concepts."
        )
        series = {}
        for split in dict.fromkeys(row["split"] for row in rows):
            mine = [row for row in rows if row["split"] == split]
            series[split] = (np.array([float(r["k"]) for r in mine]), np.array([float(r["auroc"]) for r in mine]))
        section.figure(line_png(series, "corrected concepts k", "class AUROC", "Intervention"), "AUROC as k grows")
        section.table(list(rows[0]), [[number(v) for v in row.values()] for row in rows])


def provenance_section(page: Page, components: list[Component], run_dir: Path) -> None:
    """Versions, the command that made the run, seeds, and hashes of every data manifest used."""
    section = page.section("provenance", "Provenance")
    facts: dict[str, object] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("medexplain", "torch", "numpy", "monai"):
        try:
            facts[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            facts[package] = "not installed"
    run_info = run_dir / "run.json"
    info = read_json(run_info) if run_info.is_file() else {}
    facts.update({k: v for k, v in info.items() if _scalar(v) or isinstance(v, str)})
    if "settings" in info:
        facts["settings"] = json.dumps(info["settings"])
    section.facts(facts)
    if info.get("stages"):
        section.table(["stage", "seconds"], [[name, seconds] for name, seconds in info["stages"].items()])
    sources = sorted({source for source in map(_data_source, components) if source})
    rows = [[source, _manifest_hash(Path(source))] for source in sources]
    if rows:
        section.table(["data source", "SHA-256 of manifest / file"], rows)


def simulator_section(page: Page, component: Component) -> None:
    """A trained counterfactual simulator: what it was trained for, its settings and its loss terms per epoch."""
    document = read_json(component.path / "simulator.json")
    section = page.section(f"simulator-{anchor(component)}", f"Simulator ({component.name})")
    section.facts({
        "classifier": document.get("classifier"), "data": document.get("data"), "split": document.get("split"),
        "disease class": document.get("disease_class"), "image shape": document.get("image_shape"),
        "network": json.dumps(document.get("simulator", {})), "training": json.dumps(document.get("training", {})),
    })  # fmt: skip
    history = component.path / "history.csv"
    if history.is_file() and (rows := read_csv(history)):
        epochs = np.array([float(row["epoch"]) for row in rows])
        terms = {name: np.array([float(row[name] or "nan") for row in rows]) for name in rows[0] if name != "epoch"}
        section.figure(line_png({k: (epochs, v) for k, v in terms.items()}, "epoch", "value", "Simulator loss terms"),
                       "Loss terms per epoch (hinge: the classifier's margin; the rest regularise the field)")


def simulation_section(page: Page, component: Component) -> None:
    """A simulator applied to data: flip rate, logit shift, folding and localisation, and the deformation of the
    first images (log det J over the simulated image: red where tissue grows, blue where it shrinks)."""
    index = read_json(component.path / "index.json")
    direction = index.get("direction")
    section = page.section(f"simulation-{anchor(component)}", f"Simulation: {direction} ({component.name})")
    summary = index.get("summary", {})
    section.table(["metric", "value"], [[key, value] for key, value in summary.items() if not isinstance(value, dict)])
    for item in index.get("items", [])[:GALLERY_ITEMS]:
        image = _array(component.path / item["images"])
        log_jacobian = np.log(np.clip(_array(component.path / item["jacobians"])[0], 1e-6, None))
        caption = (f"{item['id']} · logit {item['logit_before']:+.2f} -> {item['logit_after']:+.2f} · "
                   f"|u| {item['mean_displacement']:.3f}")  # fmt: skip
        if log_jacobian.ndim == 2:
            section.figure(png_bytes(upscale_nearest(overlay(image, log_jacobian, signed=True))), caption)
        else:
            section.slice_viewer(volume_slices(image, log_jacobian, None), f"log det J · {caption}")


def _array(path: Path) -> np.ndarray:
    """A simulation output array ``(C, *spatial)`` (``.npy``, or ``.nii.gz`` with channels last or dropped)."""
    if path.name.endswith(".nii.gz"):
        import nibabel

        array = np.asarray(nibabel.load(str(path)).dataobj, dtype=np.float32)
        return array[None] if array.ndim == 3 else np.moveaxis(array, -1, 0)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise MedexplainError(f"{path}: not a readable array ({error})") from None


def comparison_table(section: Section, evaluations: list[Component]) -> None:
    """One table across every evaluation of the folder: a row per evaluation and method (or baseline), a column
    per metric (mean; its interval is in the evaluation's own section)."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    metrics: list[str] = []
    for component in evaluations:
        try:
            summary = read_csv(component.path / "summary.csv")
        except MedexplainError:
            continue
        for row in summary:
            rows.setdefault((component.name, row["method"]), {})[row["metric"]] = float(row["mean"] or "nan")
            metrics += [row["metric"]] if row["metric"] not in metrics else []
    if rows:
        section.heading("Comparison across evaluations (mean per image)")
        section.table(["evaluation", "method", *metrics],
                      [[part, method, *(values.get(m, float("nan")) for m in metrics)]
                       for (part, method), values in rows.items()])  # fmt: skip


def anchor(component: Component) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in component.name).strip("-") or "run"


def _scalar(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _data_card(source: str | None) -> dict[str, object]:
    if not source:
        return {}
    try:
        from medexplain.data import load_dataset

        dataset = load_dataset(source)
    except MedexplainError as error:
        return {"status": f"not readable here ({error})"}
    splits: dict[str, int] = {}
    for split in ("train", "val", "test"):
        try:
            splits[split] = len(load_dataset(source, split))
        except MedexplainError:
            continue
    return {
        "images": len(dataset),
        "splits": ", ".join(f"{k} {v}" for k, v in splits.items()),
        "classes": ", ".join(dataset.class_names),
        "multi-label columns": ", ".join(dataset.label_names) or "-",
        "masks": ", ".join(dataset.mask_names) or "-",
    }


def _training_curves(rows: list[dict[str, str]]) -> list[tuple[bytes, str]]:
    epochs = np.array([float(r.get("epoch", i + 1)) for i, r in enumerate(rows)])
    columns = [c for c in rows[0] if c != "epoch"]
    losses = {c: np.array([float(r[c] or "nan") for r in rows]) for c in columns if c.endswith("loss")}
    others = {
        c: np.array([float(r[c] or "nan") for r in rows])
        for c in columns
        if c.startswith("val_") and not c.endswith("loss")
    }
    figures = []
    if losses:
        figures.append(
            (line_png({k: (epochs, v) for k, v in losses.items()}, "epoch", "loss", "Loss"), "Loss per epoch")
        )
    if others:
        figures.append(
            (
                line_png({k: (epochs, v) for k, v in others.items()}, "epoch", "value", "Validation"),
                "Validation metrics per epoch",
            )
        )
    return figures


def _confusion(rows: list[dict[str, str]], num_classes: int) -> np.ndarray | None:
    if not rows or "label" not in rows[0] or "predicted" not in rows[0]:
        return None
    labels = np.array([int(r["label"]) for r in rows])
    predicted = np.array([int(r["predicted"]) for r in rows])
    k = max(num_classes, labels.max() + 1, predicted.max() + 1)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def dataset_images(stored) -> Callable[[int], tuple[np.ndarray, np.ndarray | None]] | None:
    """``index -> (image (C, *spatial), mask (*spatial) or None)`` with the model's preprocessing.

    The mask is the ``lesion`` mask when the dataset has one, else the union of all its masks.
    """
    from medexplain.models import read_config, run_dataset

    try:
        dataset = run_dataset(read_config(stored.header["model"]), stored.header["data"], stored.header.get("split"),
                              size=stored.header.get("size"))  # fmt: skip
    except (MedexplainError, KeyError, TypeError):
        return None

    def fetch(index: int) -> tuple[np.ndarray, np.ndarray | None]:
        sample = dataset[index]
        chosen = {"lesion": sample.masks["lesion"]} if "lesion" in sample.masks else sample.masks
        masks = [m.numpy()[0] > 0 for m in chosen.values()]
        return sample.image.numpy(), (np.any(masks, axis=0) if masks else None)

    return fetch


def volume_slices(image: np.ndarray, attribution: np.ndarray, mask: np.ndarray | None) -> list[bytes]:
    depth = attribution.shape[0]
    chosen = np.unique(np.linspace(0, depth - 1, min(depth, MAX_SLICES)).round().astype(int))
    return [
        png_bytes(upscale_nearest(overlay(image[:, z], attribution[z], None if mask is None else mask[z])))
        for z in chosen
    ]


def _data_source(component: Component) -> str | None:
    if component.kind == "data":
        return str(component.path)
    if component.kind == "train":
        return read_json(component.path / "config.json").get("data")
    return None


def _manifest_hash(source: Path) -> str:
    target = source / "manifest.csv" if source.is_dir() else source
    try:
        return hashlib.sha256(target.read_bytes()).hexdigest()
    except OSError:
        return "not readable here"
