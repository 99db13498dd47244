"""Concepts a clinician names on Derm7pt (issue 17): probes, TCAV influence and consistency of a melanoma classifier,
and concept bottleneck models (Koh et al., ICML 2020) with test-time intervention, over 3 seeds, on the test split.

Data: ``../shared/data/derm7pt`` (1011 dermoscopy images, 384 px; train 607 / val 152 / test 252); class ``label``
= melanoma; concepts = the 10 ``label_<concept>`` columns (the 7 criteria of the 7-point checklist, Argenziano et
al. 1998, and the typical/regular counterparts of three of them). Everything is trained on the training split;
the saved epoch of every network and the L2 strength of the bottlenecks' linear layers are chosen on the
validation split; the test split is scored once per seed.

Per seed: a ResNet-18 melanoma classifier (``medexplain.train``), the concept analysis of it (``medexplain
concepts``: probes at three layers, learning curve, TCAV influence with its significance test, inconsistency vs
wrong predictions, concept maps), and bottlenecks on the same backbone: sequential, independent (reusing the
sequential run's concept network) and joint. References in the same run: the experts' own 7-point score and an L2
logistic regression of melanoma on the expert concepts (training split). Intervals are 95 % percentile-bootstrap
intervals over test images of the mean over seeds (paired resampling); Spearman intervals over the 10 concepts use
Fieller, Hartley and Pearson's (1957) standard error ``sqrt(1.06 / (n - 3))`` on Fisher's z.

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/concepts_derm7pt.py --work /tmp/concepts/derm7pt

``--size``: ``default`` (192 px, ResNet-18 width 8, 10 epochs: a CPU), ``full`` (384 px, the images' own size,
width 64 as published, 30 epochs: a GPU) or ``smoke`` (32 px, width 4, 1 epoch: checks that it runs);
``--side``, ``--width``, ``--epochs`` override the preset. ``--device cuda`` trains and analyses on the GPU.

Every stage is kept in WORK and reused by a later invocation (delete a folder to redo it).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from _headline import bootstrap_statistic
from medexplain.concepts import ConceptSettings
from medexplain.concepts.bottleneck import BottleneckSettings, train_bottleneck
from medexplain.concepts.run import analyse_run
from medexplain.metrics.classification import binary_auroc
from medexplain.models import load
from medexplain.models.bottleneck import intervene
from medexplain.train import TrainConfig, train
from medexplain.workflows.concept_maps import write_analysis

ROOT = Path(__file__).resolve().parents[1]
DERM = ROOT.parent / "shared" / "data" / "derm7pt"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
CHECKLIST = {  # Argenziano et al. 1998: major criteria 2 points, minor 1; the benign counterparts 0
    "atypical_pigment_network": 2,
    "blue_whitish_veil": 2,
    "atypical_vascular_structures": 2,
    "irregular_streaks": 1,
    "irregular_pigmentation": 1,
    "irregular_dots_globules": 1,
    "regression_structures": 1,
    "typical_pigment_network": 0,
    "regular_streaks": 0,
    "regular_dots_globules": 0,
}
PRESETS = {"smoke": {"side": 32, "width": 4, "epochs": 1}, "default": {"side": 192, "width": 8, "epochs": 10},
           "full": {"side": 384, "width": 64, "epochs": 30}}  # fmt: skip
LAYERS = ("layer2", "layer3", "layer4")
MODES = ("sequential", "independent", "joint")
# Published on Derm7pt (Kawahara et al., IEEE JBHI 23(2), 2019, DOI 10.1109/JBHI.2018.2824327): see RESULTS.md.


def manifest(split: str) -> list[dict[str, str]]:
    with (DERM / "manifest.csv").open(newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["split"] == split]


def expert(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([[float(r[f"label_{c}"]) for c in CHECKLIST] for r in rows])


def classifier(work: Path, seed: int, args: argparse.Namespace) -> Path:
    run = work / f"classifier_s{seed}"
    if not (run / "predictions.csv").is_file():
        config = TrainConfig(
            "resnet18", model_args={"width": args.width}, size=args.side, epochs=args.epochs, batch_size=32,
            seed=seed, monitor="auroc",
        )  # fmt: skip
        train(config, DERM, run, progress=False, device=args.device)
    return run


def concept_analysis(work: Path, run: Path, seed: int, args: argparse.Namespace) -> Path:
    out = work / f"concepts_s{seed}"
    if not (out / "summary.json").is_file():
        first = seed == args.first_seed  # all layers and a longer learning curve for the first seed only (CPU)
        settings = ConceptSettings(
            layers=LAYERS if first else LAYERS[-1:], learning_sizes=(10, 50) if first else (10,), learning_draws=5,
            cav_runs=10, random_runs=30, seed=seed,
        )  # fmt: skip
        report = analyse_run(
            run, DERM, settings=settings, maps_per_concept=2 if first else 0, device=args.device, progress=False
        )
        write_analysis(report, out, overwrite=True)
    return out


def bottlenecks(work: Path, seed: int, args: argparse.Namespace) -> dict[str, Path]:
    runs = {}
    for mode in MODES:
        out = work / f"bottleneck_{mode}_s{seed}"
        if not (out / "bottleneck.json").is_file():
            settings = BottleneckSettings(
                mode=mode, backbone="resnet18", backbone_args={"width": args.width}, size=args.side,
                epochs=args.epochs, concept_weight=args.concept_weight, seed=seed,
            )  # fmt: skip
            reuse = work / f"bottleneck_sequential_s{seed}" if mode == "independent" else None
            train_bottleneck(
                DERM, out, settings, concept_model_from=reuse, device=args.device, progress=False, overwrite=True
            )
        runs[mode] = out
    return runs


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def mean_auroc(labels: np.ndarray, *scores: np.ndarray) -> float:
    return float(np.mean([binary_auroc(labels == 1, s) for s in scores]))


def interval(labels: np.ndarray, scores: list[np.ndarray], seed: int = 0) -> tuple[float, float, float]:
    return bootstrap_statistic(mean_auroc, labels, *scores, seed=seed)


def fmt(value: tuple[float, float, float]) -> str:
    return f"{value[0]:.3f} [{value[1]:.3f}, {value[2]:.3f}]"


def spearman(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Spearman rho and its 95 % interval (Fisher z, standard error sqrt(1.06 / (n - 3)))."""
    rho = float(stats.spearmanr(a, b).statistic)
    half = 1.96 * math.sqrt(1.06 / (len(a) - 3))
    z = math.atanh(max(min(rho, 0.999999), -0.999999))
    return rho, math.tanh(z - half), math.tanh(z + half)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for runs and outputs (reused)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--size", choices=list(PRESETS), default="default", help="smoke, default (a CPU), full "
                        "(384 px, width 64: a GPU)")  # fmt: skip
    parser.add_argument("--side", type=int, help="image side in pixels (default: the preset's)")
    parser.add_argument("--width", type=int, help="ResNet-18 width (default: the preset's; 64 as published)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    parser.add_argument("--concept-weight", type=float, default=1.0, help="joint bottleneck lambda")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    for name, value in PRESETS[args.size].items():
        setattr(args, name, value if getattr(args, name) is None else getattr(args, name))
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    args.first_seed = seeds[0]
    args.work.mkdir(parents=True, exist_ok=True)
    started, cpu = time.perf_counter(), time.process_time()
    runs = {}
    for seed in seeds:
        run = classifier(args.work, seed, args)
        runs[seed] = {"classifier": run, "concepts": concept_analysis(args.work, run, seed, args)}
        runs[seed].update(bottlenecks(args.work, seed, args))
        print(f"seed {seed} done after {time.perf_counter() - started:.0f} s", flush=True)
    text = tables(runs, seeds)
    text += (
        f"\nWall time {time.perf_counter() - started:.0f} s, CPU time {time.process_time() - cpu:.0f} s "
        f"(stages already in --work are reused, not timed)."
    )
    print(text)
    (args.work / "results.md").write_text(text + "\n")


def tables(runs: dict[int, dict[str, Path]], seeds: list[int]) -> str:
    test, train_rows = manifest("test"), manifest("train")
    labels = np.array([int(r["label"]) for r in test])
    ids = [Path(r["image"]).stem for r in test]
    concepts = list(CHECKLIST)
    truth = expert(test)
    lines = []

    # ---- melanoma AUROC --------------------------------------------------------------------------------------
    def by_id(path: Path, column: str) -> np.ndarray:
        rows = {r["id"]: r for r in read_rows(path) if r.get("split", "test") == "test"}
        return np.array([float(rows[i][column]) for i in ids])

    scores = {"ResNet-18 classifier": [by_id(runs[s]["classifier"] / "predictions.csv", "p_1") for s in seeds]}
    for mode in MODES:
        scores[f"bottleneck, {mode}"] = [by_id(runs[s][mode] / "predictions.csv", "p_1") for s in seeds]
    seven = np.array([float(r["seven_point_score"]) for r in test])
    from sklearn.linear_model import LogisticRegression

    logistic = LogisticRegression(C=1.0, max_iter=5000).fit(expert(train_rows), [int(r["label"]) for r in train_rows])
    reference = {
        "experts' 7-point score (ceiling of a perfect bottleneck)": seven,
        "logistic regression on the expert concepts": logistic.predict_proba(truth)[:, 1],
    }
    lines += [
        "| melanoma on the test split (252 images, 63 melanoma) | AUROC [95 % CI] | per seed |",
        "|---|---|---|",
    ]
    for name, values in scores.items():
        per_seed = ", ".join(f"{binary_auroc(labels == 1, v):.3f}" for v in values)
        lines.append(f"| {name} | {fmt(interval(labels, values))} | {per_seed} |")
    for name, values in reference.items():
        lines.append(f"| {name} | {fmt(interval(labels, [values]))} | - |")

    # ---- concepts: probes and bottleneck concept AUROC -------------------------------------------------------
    probe_rows = {s: json.loads((runs[s]["concepts"] / "concepts.json").read_text()) for s in seeds}
    curve_rows = {s: json.loads((runs[s]["concepts"] / "learning_curve.json").read_text()) for s in seeds}
    image_rows = {s: json.loads((runs[s]["concepts"] / "images.json").read_text()) for s in seeds}
    lines += [
        "",
        "| concept | checklist points | train + | test + | probe CV AUROC (layer4) | probe held-out AUROC "
        + " / ".join(f"{layer} (first seed)" for layer in LAYERS[:-1])
        + f" / {LAYERS[-1]}"
        + " | held-out AUROC from 10 examples (layer4) | probe layer4 [95 % CI] | bottleneck sequential [95 % CI] "
        "| bottleneck joint [95 % CI] |",
        "|---" * 10 + "|",
    ]
    for j, concept in enumerate(concepts):
        annotated = ~np.isnan(truth[:, j])
        positive = truth[annotated, j] == 1

        def probe(layer: str, key: str, concept: str = concept) -> float:
            values = [r[key] for s in seeds for r in probe_rows[s] if r["layer"] == layer and r["concept"] == concept]
            return float(np.mean(values))

        ten = np.mean(
            [r["auroc"] for s in seeds for r in curve_rows[s] if r["concept"] == concept and r["layer"] == "layer4"
             and r["size"] == 10]
        )  # fmt: skip
        layer4 = [
            np.array([next(r[f"p_{concept}"] for r in image_rows[s] if r["layer"] == "layer4" and r["id"] == i)
                      for i in ids])[annotated]
            for s in seeds
        ]  # fmt: skip
        bottleneck = {
            mode: [by_id(runs[s][mode] / "predictions.csv", f"c_{concept}")[annotated] for s in seeds]
            for mode in ("sequential", "joint")
        }
        first = next(r for r in probe_rows[seeds[0]] if r["concept"] == concept)
        lines.append(
            f"| {concept} | {CHECKLIST[concept]} | {first['n_train_positive']} | {int(positive.sum())} | "
            f"{probe('layer4', 'cv_auroc'):.3f} | "
            + " / ".join(f"{probe(layer, 'heldout_auroc'):.3f}" for layer in LAYERS)
            + f" | {ten:.3f} | {fmt(interval(positive.astype(int), layer4))} | "
            f"{fmt(interval(positive.astype(int), bottleneck['sequential']))} | "
            f"{fmt(interval(positive.astype(int), bottleneck['joint']))} |"
        )

    # ---- influence: rankings against the checklist and the logistic regression -------------------------------
    influence = {s: json.loads((runs[s]["concepts"] / "influence.json").read_text()) for s in seeds}
    weights = {
        mode: np.mean(
            [[float(next(r["log_odds"] for r in read_rows(runs[s][mode] / "weights.csv") if r["concept"] == c))
              for c in concepts] for s in seeds], axis=0, dtype=np.float64,
        )
        for mode in MODES
    }  # fmt: skip

    def tcav(key: str) -> np.ndarray:
        return np.mean(
            [[next(r[key] for r in influence[s] if r["layer"] == "layer4" and r["concept"] == c and r["class"] == 1)
              for c in concepts] for s in seeds], axis=0, dtype=np.float64,
        )  # fmt: skip

    checklist = np.array([CHECKLIST[c] for c in concepts], dtype=float)
    regression = logistic.coef_[0]
    tcav_t, tcav_score, significant = tcav("t"), tcav("tcav"), tcav("significant") * len(seeds)
    lines += [
        "",
        "| concept | checklist | logistic regression coef. | TCAV score (melanoma, layer4) | mean derivative t vs "
        "random | significant (Holm), seeds | bottleneck log-odds sequential / independent / joint |",
        "|---|---|---|---|---|---|---|",
    ]
    for j, c in enumerate(concepts):
        lines.append(
            f"| {c} | {CHECKLIST[c]} | {regression[j]:+.2f} | {tcav_score[j]:.2f} | {tcav_t[j]:+.2f} | "
            f"{significant[j]:.0f}/{len(seeds)} | "
            + " / ".join(f"{weights[m][j]:+.2f}" for m in MODES)
            + " |"
        )
    lines += ["", "| ranking of the 10 concepts by | Spearman vs checklist points [95 % CI] | vs logistic regression |",
              "|---|---|---|"]  # fmt: skip
    rankings = {"TCAV: mean derivative t (layer4)": tcav_t, **{f"bottleneck log-odds, {m}": weights[m] for m in MODES},
                "logistic regression on expert concepts": regression}  # fmt: skip
    for name, values in rankings.items():
        lines.append(f"| {name} | {fmt(spearman(values, checklist))} | {fmt(spearman(values, regression))} |")

    # ---- intervention -----------------------------------------------------------------------------------------
    lines += ["", "| corrected concepts k | " + " | ".join(MODES) + " |", "|---" * (len(MODES) + 1) + "|"]
    curves = {}
    for mode in MODES:
        per_seed = []
        for s in seeds:
            model, _ = load(runs[s][mode])
            summary = json.loads((runs[s][mode] / "bottleneck.json").read_text())
            order = summary["concepts"]  # the model's concept order (the manifest's)
            p = torch.from_numpy(np.stack([by_id(runs[s][mode] / "predictions.csv", f"c_{c}") for c in order], 1))
            c = torch.from_numpy(truth[:, [concepts.index(name) for name in order]])
            with torch.no_grad():
                curve = [model.classify(intervene(p, c, k).float()).softmax(1)[:, 1].double().numpy()
                         for k in range(len(order) + 1)]  # fmt: skip
            recorded = [row["auroc"] for row in summary["splits"]["test"]["intervention"]]
            recomputed = [binary_auroc(labels == 1, scores) for scores in curve]
            assert np.allclose(recomputed, recorded, atol=1e-3), (mode, s, recomputed, recorded)  # float32 vs 64
            per_seed.append(curve)
        curves[mode] = [interval(labels, [per_seed[i][k] for i in range(len(seeds))]) for k in range(len(concepts) + 1)]
    for k in range(len(concepts) + 1):
        lines.append(f"| {k} | " + " | ".join(fmt(curves[m][k]) for m in MODES) + " |")

    # ---- consistency --------------------------------------------------------------------------------------------
    lines += ["", "| layer | inconsistency AUROC for wrong predictions [95 % CI] | wrong / test images (seed 0) |",
              "|---|---|---|"]  # fmt: skip
    for layer in LAYERS:
        per_seed = [rows for s in seeds if (rows := [r for r in image_rows[s] if r["layer"] == layer])]
        wrong = [np.array([not r["correct"] for r in rows]) for rows in per_seed]
        score = [np.array([r["inconsistency"] for r in rows]) for rows in per_seed]

        def statistic(*arrays: np.ndarray) -> float:
            half = len(arrays) // 2
            return float(np.mean([binary_auroc(w, x) for w, x in zip(arrays[:half], arrays[half:], strict=True)]))

        value = bootstrap_statistic(statistic, *wrong, *score, seed=0)
        lines.append(f"| {layer} ({len(per_seed)} seeds) | {fmt(value)} | {int(wrong[0].sum())} / {len(wrong[0])} |")
    metrics = {s: json.loads((runs[s]["classifier"] / "config.json").read_text())["metrics"] for s in seeds}
    saved = [f"seed {s}: {m['best_epoch']} ({m['val']['auroc']:.3f})" for s, m in metrics.items()]
    lines.append("\nClassifier saved epochs (validation AUROC): " + ", ".join(saved))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
