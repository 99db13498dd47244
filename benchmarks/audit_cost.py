"""What an audit costs beyond its parts: ``audit_run`` against the sum of its explainers and metrics run alone.

The audit explains the test split with every applicable method and the baselines, explains the methods again on
a randomised copy of the model, scores both folders and adds the verdict (paired tests, bootstrap intervals) and
the shortcut check. "Alone" runs the same pieces one by one through the public workflows, each in a folder of
its own: ``explain_run`` per method (model and randomised copy), then ``evaluate_run`` per metric on the audit's
own explanations (so both score identical maps). CPU seconds of this process (``time.process_time``), one torch
thread; the audit runs first and last, and the median of the two is reported, so slow drift of the machine's load
falls on both sides.

    .venv/bin/python benchmarks/audit_cost.py [--images 16] [--size 64] [--width 8] [--device cpu]

Goal (issue 21): audit <= 1.1x the sum of its parts.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from medexplain.data.synth import write_fundus
from medexplain.explain.hooks import last_conv_block
from medexplain.metrics.registry import metric_info
from medexplain.models import create_model, load, run_dataset, save_run
from medexplain.workflows.audit import AuditSettings, applicable_methods, audit_run, baseline_explainers
from medexplain.workflows.evaluate import evaluate_run
from medexplain.workflows.explain import explain_run


def _seconds(task) -> float:
    start = time.process_time()
    task()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="test images audited")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=int, default=8, help="ResNet-18 base width")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="audit_cost_"))
    try:
        data = write_fundus(root / "data", 4 * args.images, args.size, seed=0, show_progress=False)
        model_args = {"in_channels": 3, "num_classes": 5, "width": args.width}
        torch.manual_seed(0)
        run = save_run(create_model("resnet18", **model_args), root / "run", "resnet18", model_args)
        settings = AuditSettings()
        common = {"split": "test", "max_items": args.images, "device": args.device, "progress": False}

        def audit(folder: str) -> None:
            audit_run(run, data, root / folder, mask="lesion", settings=settings, **common)

        audits = [_seconds(lambda: audit("audit-1"))]

        network, config = load(run)
        dataset = run_dataset(config, data, "test")
        methods, _ = applicable_methods(network, dataset[0].image[None], None, last_conv_block(network), {})
        baselines, _ = baseline_explainers(settings, config, data, "lesion", None, dataset[0].image.shape[1:])
        explainers = {**methods, **baselines}
        parts: dict[str, float] = {}
        for name, explainer in explainers.items():
            parts[f"explain {name}"] = _seconds(lambda: explain_run(
                run, data, [name], root / "alone" / name, explainers={name: explainer}, **common))  # noqa: B023
        for name, explainer in methods.items():
            parts[f"explain {name} (random model)"] = _seconds(lambda: explain_run(
                run, data, [name], root / "alone-random" / name, explainers={name: explainer},  # noqa: B023
                randomised=settings.seed, **common))  # fmt: skip
        scoring = {"split": "test", "mask": "lesion", "device": args.device, "progress": False, "seed": settings.seed,
                   "resamples": settings.resamples, "metric_params": settings.metric_params}  # fmt: skip
        for metric in settings.metrics:
            parts[f"score {metric}"] = _seconds(lambda: evaluate_run(
                root / "audit-1" / "explanations", data, root / "scores" / metric, model=run,  # noqa: B023
                metrics=[metric], explainers=explainers, overwrite=True, **scoring))  # noqa: B023
            if not metric_info(metric).needs_explainer:
                parts[f"score {metric} (random model)"] = _seconds(lambda: evaluate_run(
                    root / "audit-1" / "randomised", data, root / "scores-random" / metric, model=run,  # noqa: B023
                    metrics=[metric], explainers={}, overwrite=True, **scoring))  # noqa: B023
        audits.append(_seconds(lambda: audit("audit-2")))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    total = sum(parts.values())
    audit_seconds = statistics.median(audits)
    print(f"audit of a ResNet-18 (width {args.width}) on {args.images} synthetic fundus images at {args.size} px, "
          f"{len(methods)} methods + {len(baselines)} baselines, {len(settings.metrics)} metrics; "
          f"CPU s, 1 thread, device {args.device}")  # fmt: skip
    print("| part | CPU s |")
    print("|---|---|")
    for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds:.2f} |")
    print(f"| **sum of the parts run alone** | **{total:.2f}** |")
    print(f"| **audit** (runs: {', '.join(f'{s:.2f}' for s in audits)}) | **{audit_seconds:.2f}** |")
    print(f"\naudit / sum of parts: {audit_seconds / total:.3f} (goal <= 1.1)")


if __name__ == "__main__":
    main()
