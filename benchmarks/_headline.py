"""Shared by the headline benchmarks (issue 10): sizes, data subsets, training, explaining, scoring, tables.

Every row of a headline table is reproducible on its own: ``medexplain benchmark NAME --seed K --row ROW``
trains the row's model (or reuses it from the work folder), explains the test images and scores the maps; the
exact command is printed in the row. Confidence intervals are 95 % percentile-bootstrap intervals over test
images (``medexplain.metrics.summary``), seeded with the benchmark's seed.

A full table goes to its own section of ``benchmarks/RESULTS.md`` (between ``<!-- headline:NAME -->`` and
``<!-- /headline:NAME -->``); ``--size smoke`` and ``--row`` runs write ``table.md`` and ``headline.json`` in the
work folder only, unless ``--results`` names a file. ``--device cuda`` trains, predicts, explains and scores on the
GPU (the explanation seconds then wait for the GPU's kernels: the device is synchronised around the timed call).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from _bagnet_runs import Config, benchmark_process, run
from medexplain.data import load_dataset
from medexplain.data.preprocessing import preprocessing_transform
from medexplain.data.transforms import Resize
from medexplain.data.writers import png_bytes, write_file, write_manifest
from medexplain.errors import MedexplainError
from medexplain.files import write_text
from medexplain.metrics import EmptyMaskWarning, pointing_game
from medexplain.metrics.classification import auroc, balanced_accuracy, binary_auroc
from medexplain.metrics.summary import bootstrap_interval
from medexplain.models import load
from medexplain.workflows.evaluate import evaluate_explanations
from medexplain.workflows.explain import build_explainers, explain_dataset
from medexplain.workflows.explanations import StoredExplanations, load_explanations
from medexplain.workflows.scores import summary_rows

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
RESAMPLES = 1000
Interval = tuple[float, float, float]  # (estimate, 95 % low, 95 % high)


@dataclass(frozen=True)
class Size:
    """How big one run is: images per split (None: all), image side in pixels, training epochs."""

    per_split: Mapping[str, int] | None
    side: int
    epochs: int


@dataclass(frozen=True)
class Row:
    """One table row: a trained model (``Config``) explained with ``method`` (a registered explainer)."""

    name: str
    label: str
    config: Config
    method: str | None


@dataclass
class Benchmark:
    """Parsed command line and the places a benchmark writes to."""

    name: str
    seed: int
    size_name: str
    size: Size
    rows: list[Row]
    work: Path
    results: Path | None
    device: str = "cpu"
    started: float = field(default_factory=time.perf_counter)

    def command(self, row: Row) -> str:
        size = "" if self.size_name == "default" else f" --size {self.size_name}"
        device = "" if self.device == "cpu" else f" --device {self.device}"
        return f"medexplain benchmark {self.name}{size} --seed {self.seed} --row {row.name}{device}"


SIZE_HELP = {"smoke": "seconds, used by the tests", "default": "a shared CPU", "full": "the issue's size, for a GPU"}


def parse(
    name: str, description: str, sizes: Mapping[str, Size], make_rows: Callable[[Size], list[Row]],
    argv: Sequence[str] | None = None,
) -> Benchmark:  # fmt: skip
    """The common command line: ``--size``, ``--seed``, ``--row`` (repeatable), ``--device``, ``--work``,
    ``--results``; ``make_rows(size)`` gives the table's rows at a size (same names at every size)."""
    rows = make_rows(sizes["default"])
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=list(sizes), default="default",
                        help="; ".join(f"{k}: {SIZE_HELP[k]}" for k in sizes))  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of subsets, training, explanations, bootstrap")
    parser.add_argument("--row", action="append", choices=[r.name for r in rows], help="only this row (repeatable)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, ...")
    parser.add_argument("--work", type=Path, help="folder for data subsets, run folders and maps (reused)")
    parser.add_argument("--results", type=Path, help=f"markdown file for the table (default {RESULTS.name} for "
                        "a complete default or full table)")  # fmt: skip
    args = parser.parse_args(argv)
    chosen = [r for r in make_rows(sizes[args.size]) if not args.row or r.name in args.row]
    work = args.work or ROOT / "runs" / "headline" / f"{name}-{args.size}-seed{args.seed}"
    results = args.results
    if results is None and not args.row and args.size != "smoke":
        results = RESULTS
    benchmark_process()
    return Benchmark(name, args.seed, args.size, sizes[args.size], chosen, work, results, args.device)


# ---- data ------------------------------------------------------------------------------------------------------


def write_subset(
    source: Path,
    out: Path,
    size: Size,
    seed: int,
    *,
    masks: Sequence[str] = (),
    extra_columns: Sequence[str] = (),
    decorate: Callable[[Path, Any, dict[str, object]], None] | None = None,
) -> Path:
    """A resized (``size.side`` square) copy of ``source`` with at most ``size.per_split`` images per split.

    Images are chosen per split and class by a seeded permutation (class proportions kept); 8-bit PNGs and 0/255
    masks are written with a ``manifest.csv`` that ``load_dataset`` reads. Reused when already complete.
    ``decorate(out, sample, row)`` may write more files and add their columns to the manifest row.
    """
    if (out / "manifest.csv").is_file():
        return out
    rows: list[dict[str, object]] = []
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        dataset = load_dataset(source, split=split, transform=Resize(size.side))
        chosen = _stratified(dataset.labels.numpy(), (size.per_split or {}).get(split), rng)
        for index in chosen:
            sample = dataset[int(index)]
            item = sample.meta["id"]
            image = sample.image.clamp(0, 255).round().to(torch.uint8).numpy()
            image = image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)
            row: dict[str, object] = {"image": write_file(out, f"images/{item}.png", png_bytes(image))}
            row.update(split=split, label=sample.label, id=item)
            if sample.labels is not None:
                row.update({f"label_{n}": int(v) for n, v in zip(dataset.label_names, sample.labels, strict=True)})
            for mask in masks:
                array = sample.masks[mask][0].numpy() > 0.5
                row[f"mask_{mask}"] = write_file(out, f"masks/{mask}/{item}.png", png_bytes(array))
            row.update({column: sample.meta.get(column, "") for column in extra_columns})
            if decorate is not None:
                decorate(out, sample, row)
            rows.append(row)
    write_manifest(out, rows)
    return out


def _stratified(labels: np.ndarray, count: int | None, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices (all when None), drawn per class in proportion, in ascending order."""
    if count is None or count >= labels.size:
        return np.arange(labels.size)
    picked = []
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        picked.append(members[: max(1, round(count * members.size / labels.size))])
    return np.sort(np.concatenate(picked))


# ---- models and predictions ------------------------------------------------------------------------------------


def train_run(bench: Benchmark, config: Config, data: Path) -> Path:
    """The run folder of ``config`` trained with the benchmark's seed (reused when finished)."""
    run(config, data, bench.work / "runs", bench.seed, progress=False, device=bench.device)
    return bench.work / "runs" / f"{config.name}-seed{bench.seed}"


def test_set(run_dir: Path, data: Path, split: str = "test", device: str = "cpu") -> tuple[torch.nn.Module, Any]:
    """The run's model (on ``device``) and the ``split`` of ``data`` with the run's preprocessing."""
    model, config = load(run_dir, device)
    return model, load_dataset(data, split=split, transform=preprocessing_transform(config["preprocessing"]))


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Any, batch: int = 64) -> np.ndarray:
    """``(N, K)`` class logits of every item of ``dataset`` (on the CPU; the model runs on its own device)."""
    device = next(model.parameters()).device
    logits = []
    for start in range(0, len(dataset), batch):
        images = torch.stack([dataset[i].image for i in range(start, min(start + batch, len(dataset)))])
        logits.append(model(images.to(device)).double().cpu())
    return torch.cat(logits).numpy()


def classification_values(bench: Benchmark, model: torch.nn.Module, dataset: Any) -> dict[str, Interval]:
    """Balanced accuracy and (one-vs-rest macro) AUROC of a single-label model on ``dataset``, with intervals."""
    labels = dataset.labels.numpy()
    probabilities = torch.from_numpy(predict(model, dataset)).softmax(1).numpy()
    return {
        "balanced accuracy": bootstrap_statistic(
            lambda y, p: balanced_accuracy(y, p.argmax(1)), labels, probabilities, seed=bench.seed
        ),
        "AUROC": bootstrap_statistic(auroc, labels, probabilities, seed=bench.seed),
    }


def bootstrap_statistic(statistic: Callable[..., float], *arrays: np.ndarray, seed: int) -> Interval:
    """``statistic(*arrays)`` and its 95 % percentile-bootstrap interval over the rows (paired resampling).

    Resamples where the statistic is undefined (NaN, e.g. a class missing) are left out of the percentiles.
    """
    n = len(arrays[0])
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # resamples with an undefined statistic are NaN, left out
        draws = [statistic(*(a[index] for a in arrays)) for index in rng.integers(0, n, size=(RESAMPLES, n))]
        low, high = np.nanpercentile(np.asarray(draws, dtype=np.float64), [2.5, 97.5])
    return float(statistic(*arrays)), float(low), float(high)


def positive_probability(run_dir: Path, data: Path, positive: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Whether each test image of ``data`` is of class ``positive``, and the run's probability of that class."""
    model, dataset = test_set(run_dir, data)
    return dataset.labels.numpy() == positive, torch.from_numpy(predict(model, dataset)).softmax(1)[:, positive].numpy()


def binary_test_accuracy(run_dir: Path, data: Path, seed: int, positive: int = 1) -> dict[str, Any]:
    """Test accuracy, balanced accuracy and AUROC (class ``positive`` against the rest) of a two-class run, with
    their bootstrap intervals over images; and the number of test images and of positive ones."""
    labels, probability = positive_probability(run_dir, data, positive)

    def balanced(y: np.ndarray, p: np.ndarray) -> float:
        return balanced_accuracy(y.astype(int), (p > 0.5).astype(int))

    return {
        "accuracy": bootstrap_statistic(lambda y, p: float(np.mean((p > 0.5) == y)), labels, probability, seed=seed),
        "balanced_accuracy": bootstrap_statistic(balanced, labels, probability, seed=seed),
        "auroc": bootstrap_statistic(binary_auroc, labels, probability, seed=seed),
        "images": len(labels), "positive": int(labels.sum()),
    }  # fmt: skip


# ---- explanations ----------------------------------------------------------------------------------------------


def explain(
    bench: Benchmark, row: Row, run_dir: Path, dataset: Any, target: Any = "predicted", data: Path | None = None
) -> tuple[StoredExplanations, float]:
    """Maps of ``row.method`` for every item of ``dataset`` in a fresh folder; returns them and seconds per image."""
    out = bench.work / "explanations" / row.name
    if out.exists():
        shutil.rmtree(out)  # timing needs a fresh run, never the skipped items of an earlier one
    model, _ = load(run_dir, bench.device)
    header = {"model": str(run_dir), "data": str(data or dataset.source), "split": dataset.split}
    torch.manual_seed(bench.seed)
    synchronise(bench.device)
    started = time.perf_counter()
    explain_dataset(model, dataset, build_explainers([row.method]), out, header, target=target,
                    device=bench.device, progress=False)  # fmt: skip
    synchronise(bench.device)
    return load_explanations(out), (time.perf_counter() - started) / len(dataset)


def synchronise(device: str) -> None:
    """Wait for the kernels queued on a CUDA ``device`` (nothing on the CPU), so that wall-clock times cover them."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def score(
    bench: Benchmark, stored: StoredExplanations, dataset: Any, metrics: Sequence[str], *, run_dir: Path | None = None,
    mask: str | None = None, custom: Mapping[str, Callable[..., torch.Tensor]] | None = None,
) -> tuple[dict[str, Interval], dict[str, int]]:  # fmt: skip
    """Mean and bootstrap interval over test images of each metric.

    ``metrics`` are registered names scored by ``medexplain.metrics.evaluate`` with their defaults; ``custom`` maps
    a column name to a library metric function with other options, ``fn(maps (1, *s), mask (1, *s)) -> (1,)``.
    Also returns, per metric, how many maps it refused (e.g. relevance mass of an all-zero Grad-CAM map); those
    are scored NaN and left out of the mean, never silently dropped from the count.
    """
    model = load(run_dir, bench.device)[0] if run_dir is not None else None
    rows, refused = metric_rows(stored, dataset, metrics, model, mask, bench.device)
    result = summarise_rows(bench, rows)
    for name, function in (custom or {}).items():
        values, refused[name] = mask_scores(stored, dataset, function, mask)
        result[name] = mean_interval(values, bench.seed)
    return result, refused


def strict_pointing_game(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The registered pointing game, refusing a constant map (e.g. an all-zero Grad-CAM) against a non-empty mask:
    every position ties for the maximum, so it would count as a hit. ``(1, *spatial)`` -> ``(1,)``."""
    flat = maps.flatten(1)
    if bool((flat.amax(1) == flat.amin(1)).any()) and bool(mask.any()):
        raise MedexplainError("pointing game: a constant map has no maximum to point with")
    return pointing_game(maps, mask)


def mask_scores(
    stored: StoredExplanations, dataset: Any, function: Callable[..., torch.Tensor], mask: str | None
) -> tuple[list[float], int]:
    """``function(map, mask)`` for every stored map (each explained target) of one method; NaN where refused."""
    values, refused = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyMaskWarning)  # images without a mask score NaN, left out of the mean
        for item in stored.items:
            truth = dataset[item.index].masks[mask][0][None] if mask else None
            for method in item.maps:
                for one in stored.load(item, method):
                    try:
                        values.append(float(function(one[None], truth) if truth is not None else function(one[None])))
                    except MedexplainError:
                        refused += 1
                        values.append(math.nan)
    return values, refused


def metric_rows(
    stored: StoredExplanations, dataset: Any, metrics: Sequence[str], model: torch.nn.Module | None, mask: str | None,
    device: str = "cpu",
) -> tuple[list[dict[str, Any]], dict[str, int]]:  # fmt: skip
    """Per-map rows of registered metrics (``medexplain.metrics.evaluate``, on ``device``, where ``model`` is) and
    the maps each refused."""
    rows, refused = [], {}
    for metric in metrics:
        one, refused[metric] = _score_metric(stored, dataset, metric, model, mask, device)
        rows += one
    return rows, refused


def summarise_rows(bench: Benchmark, rows: list[dict[str, Any]]) -> dict[str, Interval]:
    """Metric -> mean and bootstrap interval of per-map rows (``summary_rows``, the benchmark's seed)."""
    summary = summary_rows(rows, resamples=RESAMPLES, seed=bench.seed)
    return {str(s["metric"]): (float(s["mean"]), float(s["ci_low"]), float(s["ci_high"])) for s in summary}


def _score_metric(
    stored: StoredExplanations, dataset: Any, metric: str, model: torch.nn.Module | None, mask: str | None,
    device: str,
) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
    """Per-map rows of one metric; when a batch is refused, item by item with NaN for the refused maps."""
    options = {"model": model, "mask_name": mask, "device": device, "progress": False}
    try:
        return evaluate_explanations(stored, dataset, [metric], **options).rows, 0
    except MedexplainError:
        rows, refused = [], 0
        for item in stored.items:
            try:
                rows += evaluate_explanations(replace(stored, items=(item,)), dataset, [metric], **options).rows
            except MedexplainError:
                refused += 1
                rows += [{"method": m, "metric": metric, "score": math.nan} for m in item.maps]
        return rows, refused


def mean_interval(values: Sequence[float], seed: int) -> Interval:
    """Mean and bootstrap interval of per-image values (NaN left out)."""
    return bootstrap_interval([v for v in values if not math.isnan(v)], resamples=RESAMPLES, seed=seed)


# ---- tables ----------------------------------------------------------------------------------------------------


def cell(value: Interval | float | str | None, digits: int = 3) -> str:
    """``0.712 [0.650, 0.771]`` for an interval, the number for a number, ``-`` for nothing."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        estimate, low, high = value
        if math.isnan(estimate):
            return "n/a"
        return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def over_seeds(values: Sequence[float | None], digits: int = 2) -> str:
    """``0.55 (0.50 / 0.60)``: the mean over seeds of per-seed estimates and the estimates, seed by seed (``n/a``
    where a seed has none; the mean of the others)."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    mean = f"{float(np.mean(present)):.{digits}f}" if present else "n/a"
    return f"{mean} (" + " / ".join(cell(v, digits) if v is not None else "n/a" for v in values) + ")"


def markdown_table(bench: Benchmark, columns: Sequence[str], results: Sequence[Mapping[str, Any]]) -> str:
    """One line per row result (``{"row", "label", "values"}``) with the seed and the exact command."""
    lines = ["| row | seed | " + " | ".join(columns) + " | command |", "|---" * (len(columns) + 3) + "|"]
    for result in results:
        cells = [cell(result["values"].get(c)) for c in columns]
        lines.append(f"| {result['label']} | {bench.seed} | " + " | ".join(cells) + f" | `{result['command']}` |")
    return "\n".join(lines)


def finish(
    bench: Benchmark, title: str, tables: Sequence[tuple[Sequence[str], list[dict[str, Any]]]], notes: str
) -> str:
    """Write ``headline.json`` and ``table.md`` in the work folder and, when due, the RESULTS.md section.

    ``tables``: ``(columns, row results)`` pairs, each printed as one markdown table.
    """
    minutes = (time.perf_counter() - bench.started) / 60
    results = [r for _, rows in tables for r in rows]
    text_tables = "\n\n".join(markdown_table(bench, columns, rows) for columns, rows in tables if rows)
    sides = f"{bench.size.side} px" if bench.size.side else "native size"
    header = (
        f"### {title}\n\n"
        f"Size `{bench.size_name}` ({sides}, {bench.size.epochs} epochs, images per split: "
        f"{dict(bench.size.per_split) if bench.size.per_split else 'all'}), seed {bench.seed}, "
        f"{minutes:.1f} min wall-clock, {time.process_time() / 60:.1f} min CPU time on {torch.get_num_threads()} "
        f"torch thread(s){device_name(bench.device)} "
        f"(this run; models reused from the work folder are not retrained). "
        f"Intervals: 95 % bootstrap over test images ({RESAMPLES} resamples, seed {bench.seed})."
    )
    refused = [
        f"{r['label']}: " + ", ".join(f"{metric} {count}" for metric, count in r["refused"].items())
        for r in results
        if r.get("refused")
    ]
    if refused:
        notes += "\nMaps a metric refused (e.g. an all-zero map has no relevance mass; scored NaN, left out): "
        notes += "; ".join(refused) + "."
    text = f"{header}\n\n{text_tables}\n\n{notes.strip()}\n"
    payload = {"benchmark": bench.name, "seed": bench.seed, "size": bench.size_name, "rows": results}
    write_text(bench.work / "headline.json", json.dumps(payload, indent=1, default=_jsonable) + "\n")
    write_text(bench.work / "table.md", text)
    if bench.results is not None:
        write_section(bench.results, f"headline:{bench.name}", text)
    print(text)
    return text


def device_name(device: str) -> str:
    """``""`` on the CPU, else ``", device cuda (NVIDIA H100 ...)"``: the card beside the numbers it gave."""
    if torch.device(device).type == "cpu":
        return ""
    card = f" ({torch.cuda.get_device_name(device)})" if torch.device(device).type == "cuda" else ""
    return f", device {device}{card}"


def _jsonable(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def recorded_section(key: str, path: Path = RESULTS) -> str:
    """The text of ``path``'s ``<!-- key --> ... <!-- /key -->`` section (what :func:`write_section` wrote)."""
    text = path.read_text(encoding="utf-8")
    return text[text.index(f"<!-- {key} -->") + len(f"<!-- {key} -->") : text.index(f"<!-- /{key} -->")]


def write_section(path: Path, key: str, text: str) -> None:
    """Replace (or append) the ``<!-- key --> ... <!-- /key -->`` section of ``path``, atomically."""
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block + "\n"
    write_text(path, new)


def row_result(
    bench: Benchmark, row: Row, values: Mapping[str, Any], refused: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The record of one computed row (``refused``: maps a metric could not score, by metric)."""
    refused = {metric: count for metric, count in (refused or {}).items() if count}
    return {"row": row.name, "label": row.label, "command": bench.command(row), "values": dict(values),
            "refused": refused}  # fmt: skip


def compute_rows(bench: Benchmark, compute: Callable[[Row], Any]) -> list[Any]:
    """``compute(row)`` for every chosen row, behind a progress bar."""
    results = []
    with Progress(transient=False) as bar:
        task = bar.add_task(bench.name, total=len(bench.rows))
        for row in bench.rows:
            results.append(compute(row))
            bar.advance(task)
    return results


# ---- the audit benchmarks' command line ----------------------------------------------------------------------------


def cpu_minutes() -> float:
    """CPU minutes of this process and of the commands it ran."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (time.process_time() + children.ru_utime + children.ru_stime) / 60


def preset_header(args: argparse.Namespace, minutes: float, preset: Any) -> str:
    """The start of an audit table's header: the preset (a dataclass) and the run's size, device, threads and time."""
    from dataclasses import asdict

    return (f"Preset `{args.size}` ({json.dumps(asdict(preset))}), seeds {args.seeds}, device {args.device}, "
            f"{torch.get_num_threads()} torch thread(s), {minutes:.1f} min wall-clock, {cpu_minutes():.1f} min CPU "
            "time (work reused from the folder not counted). ")  # fmt: skip


def estimate(interval: Sequence[float] | None) -> float | None:
    """The estimate of a recorded ``(estimate, low, high)`` interval (None: none recorded)."""
    return None if interval is None else float(interval[0])


def audit_benchmark_main(
    argv: Sequence[str] | None,
    name: str,
    description: str,
    presets: Mapping[str, Any],
    run_seed: Callable[[str, Any, int, str, Path], dict[str, Any]],
    markdown: Callable[[Mapping[str, Any]], str],
    header: Callable[[argparse.Namespace, float], str],
    summary: Callable[[list[dict[str, Any]]], str] | None = None,
) -> int:
    """The command line of ``benchmarks/audit_NAME.py``: ``--size`` (a key of ``presets``), ``--seeds``, ``--device``,
    ``--work`` (default ``runs/audit-NAME/SIZE``), ``--results``. Runs ``run_seed(size, preset, seed, device, work)``
    per seed and prints ``markdown(result)``; writes ``WORK/audit_NAME.json``, ``WORK/table.md`` (``header(args,
    wall-clock minutes)``, ``summary(results)`` of several seeds, then every seed's tables) and, with ``--results``,
    that file's ``audit:NAME`` section."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=list(presets), default="default", help="smoke (tests), default (CPU), "
                        "full (a GPU)")  # fmt: skip
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (training, subsets, audit, bootstrap)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--work", type=Path, help="folder for the data copy, models and audits (reused)")
    parser.add_argument("--results", type=Path, help=f"markdown file whose 'audit:{name}' section gets the tables")
    args = parser.parse_args(argv)
    benchmark_process()
    work = args.work or ROOT / "runs" / f"audit-{name}" / args.size
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    results = []
    for seed in seeds:
        result = run_seed(args.size, presets[args.size], seed, args.device, work)
        results.append(result)
        print(markdown(result), flush=True)
    across = summary(results) + "\n" if summary is not None and len(results) > 1 else ""
    text = header(args, (time.perf_counter() - started) / 60) + across + "\n".join(markdown(r) for r in results)
    write_text(work / f"audit_{name}.json", json.dumps({"size": args.size, "seeds": seeds, "results": results},
                                                       indent=1) + "\n")  # fmt: skip
    write_text(work / "table.md", text)
    if args.results is not None:
        write_section(args.results, f"audit:{name}", text)
    return 0

