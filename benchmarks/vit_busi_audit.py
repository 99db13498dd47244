"""The audit of the BUSI ViT beside the audit of the busi table's ResNet-18: accuracy and the verdict tables.

Issue 19: the ViT chosen on the validation split by ``vit_busi.py`` (trained from scratch on the 64-pixel BUSI
subset) and the ResNet-18 of ``headline_busi.py`` (same subset, split and seed; its own settings: 10 epochs,
learning rate 1e-3) are each audited by :func:`medexplain.workflows.audit.audit_run` with its defaults: every
method the model allows (for the ViT the transformer methods, for the ResNet the CNN ones), the five baselines,
each method on a randomised copy of the model, localisation, faithfulness, robustness, complexity and sanity
metrics, and the verdict per method (one-sided paired Wilcoxon over images, Holm). The audit runs on the test
images with a lesion (benign and malignant: normal images have no lesion to localise); accuracy is over the whole
test split. Trained models are reused from the work folder of ``vit_busi.py`` (``--work``), else trained.

    python benchmarks/vit_busi_audit.py [--size smoke|default] [--work DIR] [--seed K] [--max-items N] [--device cpu]

(``--max-items N``: the first N of the lesion test images in a seeded random order.)
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import headline_busi
import vit_busi
from _bagnet_runs import benchmark_process
from _headline import DATA, ROOT, Benchmark, cell, classification_values, test_set, train_run, write_subset
from medexplain.files import write_text
from medexplain.workflows.audit import AuditSettings, audit_run

LIGHT = {"integrated-gradients": {"steps": 16}, "smoothgrad": {"samples": 8}, "occlusion": {"window": 8, "stride": 8}}
"""Fewer path points, noise draws and occlusion windows than the defaults (50, 25, stride 4), for both models: the
robustness and sanity metrics call every method again (5 noise draws, 3 re-drawn layers) on the model and on its
randomised copy. Occlusion windows are the ViT's 8-pixel patches."""
SHOWN = {"pointing-game": "pointing game", "mask-auroc": "mask AUROC", "relevance-mass": "relevance mass",
         "deletion-auc": "deletion AUC", "model-randomisation": "rank similarity after randomisation"}  # fmt: skip


def lesion_images(data: Path, out: Path, seed: int) -> Path:
    """A copy of ``data`` whose test split keeps only the images with a lesion, in a seeded random order (so that
    the audit's first N items are a random sample); the other splits unchanged."""
    if (out / "manifest.csv").is_file():
        return out
    with (data / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    lesions = [row for row in rows if row["split"] == "test" and not row["id"].startswith("normal")]
    order = np.random.default_rng(seed).permutation(len(lesions))
    kept = [row for row in rows if row["split"] != "test"] + [lesions[i] for i in order]
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(data, staging, ignore=shutil.ignore_patterns("manifest.csv"))
    with (staging / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    staging.rename(out)
    return out


def _interval(summary: dict | None) -> str:
    if not summary or summary.get("mean") is None:
        return "-"
    return cell((summary["mean"], summary["ci_low"], summary["ci_high"]))


def _criterion(row: dict, key: str) -> str:
    result = row[key]
    if result["verdict"] == "n/a" or key == "randomisation":
        return result["verdict"]
    return f"{result['verdict']} ({len(result['better_on'])}/{len(result['of'])})"


def verdict_table(document: dict) -> str:
    """Methods in ranking order with their verdicts and main scores, then the baselines' scores."""
    head = "| method | localises | faithful | randomisation | " + " | ".join(SHOWN.values()) + " |"
    lines = [head, "|---" * (4 + len(SHOWN)) + "|"]
    rows = {row["method"]: row for row in document["verdict"]}
    for method in document["ranking"]:
        row = rows[method]
        criteria = [_criterion(row, k) for k in ("localises", "faithful", "randomisation")]
        scores = [_interval(row["metrics"].get(m)) for m in SHOWN]
        lines.append(f"| {method} | " + " | ".join(criteria + scores) + " |")
    for name, metrics in document["baselines"].items():
        if name.startswith("baseline-"):
            scores = [_interval(metrics.get(m)) for m in SHOWN]
            lines.append(f"| {name} | - | - | - | " + " | ".join(scores) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(vit_busi.SIZES), default="default", help="vit_busi.py's size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="work folder of vit_busi.py (its data and trained runs are reused; "
                        "default runs/headline/vit-busi-SIZE-seedK)")  # fmt: skip
    parser.add_argument("--max-items", type=int, help="audit N lesion test images (a seeded random sample)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    work = args.work or ROOT / "runs" / "headline" / f"vit-busi-{args.size}-seed{args.seed}"
    benchmark_process()
    started = time.perf_counter()
    size = vit_busi.SIZES[args.size]
    bench = Benchmark("vit-busi", args.seed, args.size, size, [], work, None, args.device)
    data = write_subset(DATA / "busi", work / f"data-{size.side}px", size, args.seed, masks=["lesion"])
    chosen, _ = vit_busi.select(bench, data)
    resnet = headline_busi.configs(headline_busi.SIZES[args.size].epochs)["resnet18"]
    audited = lesion_images(data, work / f"data-{size.side}px-lesions", args.seed)
    settings = AuditSettings(method_params=LIGHT, seed=args.seed)
    sections = []
    for label, config in ((f"ViT ({chosen.name}, chosen on validation)", chosen), ("ResNet-18 (busi table)", resnet)):
        run_dir = train_run(bench, config, data)
        model, dataset = test_set(run_dir, data, device=args.device)
        values = classification_values(bench, model, dataset)
        out = work / "audit" / config.name
        document = audit_run(run_dir, audited, out, mask="lesion", settings=settings, max_items=args.max_items,
                             device=args.device, progress=False)  # fmt: skip
        n = max(row["metrics"].get("mask-auroc", {}).get("n", 0) for row in document["verdict"])
        skipped = ", ".join(f"{name} ({reason})" for name, reason in document["not_applicable"].items())
        sections.append(
            f"#### {label}\n\nTest split (all {len(dataset)} images): balanced accuracy "
            f"{cell(values['balanced accuracy'])}, AUROC {cell(values['AUROC'])}. Audit over {n} lesion test images, "
            "CAM layer "
            f"`{document['cam_layer']}`; folder `{out}`.\n\n{verdict_table(document)}\n\nNot applicable: {skipped}.\n"
        )
    minutes = (time.perf_counter() - started) / 60
    text = (f"{minutes:.1f} min wall-clock, {time.process_time() / 60:.1f} min CPU time on "
            f"{torch.get_num_threads()} torch thread(s); method parameters {json.dumps(LIGHT)}.\n\n"
            + "\n".join(sections))  # fmt: skip
    write_text(work / "audit" / "table.md", text)
    print(text)


if __name__ == "__main__":
    main()
