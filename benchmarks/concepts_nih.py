"""Concept analysis of an "any finding" chest X-ray classifier on NIH ChestX-ray14 (1000-image subset, 64 px).

Concepts are the 14 findings (``label_<finding>`` columns); the classifier is trained on ``label`` (any finding)
with ``medexplain.train``. Probes and concept directions are fit on the training split, everything else is
reported on the test split: probe AUROC (cross-validated and held-out), precision and recall, the learning curve,
TCAV score and influence of each finding on "finding", its significance against random directions, and the AUROC
with which inconsistent explanations flag wrong predictions (Wang et al. 2019: "bad explanations often lead to
wrong diagnoses").

Peer check in the same run: the directional derivatives are recomputed with Captum (layer gradients per class,
dotted with the concept direction broadcast over the layer's positions, as Captum's TCAV does on flattened
activations) and compared, with the time of both.

    .venv/bin/python benchmarks/concepts_nih.py --work /tmp/concepts_nih

The trained run is kept in WORK/run and reused by a second invocation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from captum.attr import LayerGradientXActivation

from medexplain.concepts import (
    Augmentation,
    ConceptSettings,
    collect_activations,
    directional_derivatives,
    probe_direction,
    write_report,
)
from medexplain.concepts.run import analyse_run
from medexplain.data import load_dataset
from medexplain.data.preprocessing import preprocessing_transform
from medexplain.models import load
from medexplain.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
NIH = ROOT.parent / "shared" / "data" / "nih_cxr1000"


def train_once(work: Path, epochs: int, seed: int) -> Path:
    run = work / "run"
    if not (run / "config.json").is_file():
        config = TrainConfig("resnet18", model_args={"width": 16, "small_input": True}, epochs=epochs, batch_size=32,
                             seed=seed)  # fmt: skip
        train(config, NIH, run, progress=True, device="cpu")
    return run


def captum_check(run: Path, direction: np.ndarray, layer: str, n: int) -> dict[str, float]:
    """Our directional derivatives against Captum layer gradients on ``n`` test images, and the timings."""
    model, config = load(run)
    dataset = load_dataset(NIH, "test", preprocessing_transform(config["preprocessing"]))
    subset = [dataset[i] for i in range(n)]
    started = time.perf_counter()
    ours = directional_derivatives(
        collect_activations(model, subset, [layer], progress=False).gradients[layer], direction
    )
    ours_s = time.perf_counter() - started
    images = torch.stack([s.image for s in subset])
    started = time.perf_counter()
    attribution = LayerGradientXActivation(model, dict(model.named_modules())[layer], multiply_by_inputs=False)
    theirs = []
    for k in range(ours.shape[1]):
        grad = attribution.attribute(images, target=k).detach().double()
        broadcast = torch.from_numpy(direction).reshape(1, -1, *[1] * (grad.dim() - 2))
        theirs.append((grad * broadcast).flatten(1).sum(1).numpy())
    theirs_s = time.perf_counter() - started
    theirs = np.stack(theirs, axis=1)
    return {
        "images": n,
        "max_abs_difference": float(np.abs(ours - theirs).max()),
        "max_abs_derivative": float(np.abs(theirs).max()),
        "tcav_ours": float((ours[:, 1] > 0).mean()),
        "tcav_captum": float((theirs[:, 1] > 0).mean()),
        "seconds_ours": ours_s,
        "seconds_captum": theirs_s,
    }


def markdown(report, check: dict[str, float]) -> str:
    classes = report.summary["classes"]
    positive = classes[-1]
    influence = {r["concept"]: r for r in report.influence if r["class_name"] == positive}
    lines = [
        f"| finding | train +/n | test + | CV AUROC | held-out AUROC | precision | recall | examples needed | "
        f"TCAV ({positive}) | mean dderiv (random sd) | p (Holm) | signif. | TCAV t-test p (Holm) | Spearman rho |",
        "|---" * 14 + "|",
    ]
    for row in report.concepts:
        i = influence[row["concept"]]
        lines.append(
            f"| {row['concept']} | {row['n_train_positive']}/{row['n_train']} | {row['n_heldout_positive']} | "
            f"{row['cv_auroc']:.3f} | {row['heldout_auroc']:.3f} | {row['heldout_precision']:.2f} | "
            f"{row['heldout_recall']:.2f} | {row['examples_needed']} | {i['tcav']:.2f} | "
            f"{i['derivative_mean']:+.3f} ({i['random_derivative_std']:.3f}) | {i['p_holm']:.3g} | "
            f"{'yes' if i['significant'] else 'no'} | {i['p_tcav_holm']:.3g} | {i['spearman_rho']:+.2f} |"
        )
    summary = report.summary
    aurocs = ", ".join(f"{k}: {v:.3f}" for k, v in summary["inconsistency_auroc"].items())
    consistent = [r for r in report.images if r["consistent"]]
    inconsistent = [r for r in report.images if not r["consistent"]]
    accuracy = lambda rows: np.mean([r["correct"] for r in rows]) if rows else float("nan")  # noqa: E731
    lines += [
        "",
        f"Held-out accuracy of the classifier: {summary['held_out_accuracy']:.3f} ({summary['n_held_out']} images).",
        f"Inconsistency AUROC for wrong predictions: {aurocs}; accuracy on consistent explanations "
        f"{accuracy(consistent):.3f} (n={len(consistent)}), on inconsistent ones {accuracy(inconsistent):.3f} "
        f"(n={len(inconsistent)}).",
        f"Skipped (too few annotated training examples): {', '.join(summary['skipped_concepts']) or 'none'}.",
        f"Captum check on {check['images']} test images: max |ours - Captum| = {check['max_abs_difference']:.2e} "
        f"(max |derivative| {check['max_abs_derivative']:.2e}); TCAV score ours {check['tcav_ours']:.3f} vs Captum "
        f"{check['tcav_captum']:.3f}; time ours {check['seconds_ours']:.2f} s (activations + all class gradients "
        f"in one pass) vs Captum {check['seconds_captum']:.2f} s (one pass per class), ratio "
        f"{check['seconds_captum'] / check['seconds_ours']:.2f}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the run and the outputs")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", type=int, default=0, help="augmented copies averaged per image")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.process_time()
    run = train_once(args.work, args.epochs, args.seed)
    metrics = json.loads((run / "config.json").read_text())["metrics"]["test"]
    print(f"classifier test metrics: {json.dumps(metrics)}")
    settings = ConceptSettings(seed=args.seed, augmentation=Augmentation(copies=args.augment, seed=args.seed))
    report = analyse_run(run, NIH, concepts="all", settings=settings)
    write_report(report, args.work / "concepts", overwrite=True)
    layer = report.summary["layers"][0]
    probe = report.probes[(layer, report.concepts[0]["concept"])]
    direction = probe_direction(probe, len(probe.raw_weights) // len(settings.pool))
    check = captum_check(run, direction, layer, n=64)
    text = markdown(report, check)
    print(text)
    print(f"\nCPU seconds in all: {time.process_time() - started:.0f}; outputs in {args.work / 'concepts'}")


if __name__ == "__main__":
    main()
