"""The Derm7pt audit benchmark (issue 23) at its smoke size, on the real dermoscopy images, seeds 0 and 1: the lambda
is chosen on seed 0's validation AUROC and reused by seed 1; the ResNet's best method is the one with the lowest
validation deletion AUC; the audit (without masks) explains the melanoma class of the melanoma test images only;
accuracy, the paired differences and the border shares are those recomputed from the stored predictions, scores and
maps; the printed command of seed 1, run alone in a fresh folder, gives the same numbers; and the tables have the
format recorded in RESULTS.md."""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

import audit_derm7pt
from _headline import recorded_section
from medexplain.data.manifest import read_manifest
from medexplain.workflows.audit import audit_scores
from medexplain.workflows.explanations import load_explanations

VERDICT = re.compile(r"^(pass|fail) \(\d/3\)$")
SHARE = re.compile(r"^\d\.\d\d / \d\.\d\d \(ratio \d+\.\d\d \[\d+\.\d\d, \d+\.\d\d\]\)( \*\*flagged\*\*)?$")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, list[dict]]:
    work = tmp_path_factory.mktemp("audit-derm7pt")
    assert audit_derm7pt.main(["--size", "smoke", "--seeds", "0,1", "--work", str(work)]) == 0
    return work, json.loads((work / "audit_derm7pt.json").read_text())["results"]


def test_the_lambda_is_chosen_on_seed_0s_validation_auroc_and_reused(smoke) -> None:
    work, (first, second) = smoke
    sweep = first["sweep"]
    assert first["sweep_seed"] == second["sweep_seed"] == 0
    untimed = [{name: {k: v for k, v in entry.items() if k != "seconds"} for name, entry in r["sweep"].items()}
               for r in (first, second)]  # fmt: skip
    assert untimed[0] == untimed[1]  # seed 1 reuses seed 0's sweep
    assert len(sweep) == len(audit_derm7pt.PRESETS["smoke"].lambdas) == 2
    best = max(sweep.values(), key=lambda entry: entry["auroc"])["auroc"]
    chosen = first["models"]["bagnet"]
    tied = [name for name, entry in sweep.items() if entry["auroc"] == best]
    assert chosen in tied and chosen == max(tied, key=lambda n: float(n.rpartition("lambda")[2]))  # ties: sparsest
    assert second["models"]["bagnet"] == chosen and chosen in second["validation"]
    for seed in (0, 1):
        training = json.loads((work / "runs" / f"{chosen}-seed{seed}" / "config.json").read_text())["training"]
        assert training["seed"] == seed and training["model_args"]["evidence_activation"] == "relu"
        assert training["sparsity_on"] == "local" and training["class_weights"] == "balanced"
        assert training["sparsity_lambda"] == float(chosen.rpartition("lambda")[2])


def test_the_resnets_best_method_has_the_lowest_validation_deletion_auc(smoke) -> None:
    work, results = smoke
    for result in results:
        folder = work / f"val-audit-{result['models']['resnet']}-seed{result['seed']}"
        deletion = audit_scores(folder)["deletion-auc"]
        means = {m: np.mean(list(deletion[m].values())) for m in audit_derm7pt.RESNET_METHODS}
        assert result["resnet_best"]["best"] == min(means, key=lambda m: means[m])
        rows = read_manifest(work / f"val-audit-data-seed{result['seed']}").rows
        ids = {row.meta["id"] for row in rows if row.split == "val"}
        assert {row.label for row in rows if row.split == "val"} == {1} and set(deletion["gradcam"]) == ids


def test_the_audit_explains_the_melanoma_class_of_melanoma_test_images(smoke) -> None:
    work, results = smoke
    for result in results:
        audited = read_manifest(work / f"audit-data-seed{result['seed']}").rows
        melanoma = {row.meta["id"] for row in audited if row.split == "test"}
        assert {row.label for row in audited if row.split == "test"} == {1}
        assert len(melanoma) == result["audited_images"] == audit_derm7pt.PRESETS["smoke"].audited_tiles
        for name in result["models"].values():
            folder = work / f"audit-{name}-seed{result['seed']}"
            index = json.loads((folder / "explanations" / "index.json").read_text())
            assert {item["id"] for item in index["items"]} == melanoma
            assert all(np.ravel(item["targets"]).tolist() == [1] for item in index["items"])
            assert "mask-auroc" not in audit_scores(folder)  # no masks, no localisation


def test_accuracy_and_the_auroc_difference_are_those_of_the_predictions(smoke) -> None:
    work, results = smoke
    data = work / "data-48px"
    for result in results:
        probabilities = {}
        for model, name in result["models"].items():
            melanoma, probabilities[model] = audit_derm7pt.positive_probability(
                work / "runs" / f"{name}-seed{result['seed']}", data)  # fmt: skip
            entry = result["accuracy"][model]
            assert entry["auroc"][0] == pytest.approx(roc_auc_score(melanoma, probabilities[model]))
            assert entry["balanced_accuracy"][0] == pytest.approx(
                balanced_accuracy_score(melanoma, probabilities[model] > 0.5))  # fmt: skip
        difference = result["accuracy"]["auroc_difference"]
        expected = roc_auc_score(melanoma, probabilities["bagnet"]) - roc_auc_score(melanoma, probabilities["resnet"])
        assert difference[0] == pytest.approx(expected) and difference[1] <= difference[0] <= difference[2]


def test_the_paired_difference_is_the_mean_of_per_image_differences(smoke) -> None:
    work, results = smoke
    for result in results:
        models, best = result["models"], result["resnet_best"]["best"]
        bagnet = audit_scores(work / f"audit-{models['bagnet']}-seed{result['seed']}")
        resnet = audit_scores(work / f"audit-{models['resnet']}-seed{result['seed']}")
        for metric in audit_derm7pt.COMPARED:
            ids = sorted(bagnet[metric]["evidence"])
            expected = np.nanmean([bagnet[metric]["evidence"][i] - resnet[metric][best][i] for i in ids])
            estimate, low, high = result["comparisons"]["evidence_vs_best"][metric]
            assert estimate == pytest.approx(expected) and low <= estimate <= high
            beyond = np.nanmean([(bagnet[metric]["evidence"][i] - bagnet[metric]["baseline-random"][i])
                                 - (resnet[metric][best][i] - resnet[metric]["baseline-random"][i]) for i in ids])
            assert result["comparisons"]["beyond_random"][metric][0] == pytest.approx(beyond)
            against = result["comparisons"]["against_baselines"][f"{best} - baseline-random"][metric][0]
            assert against == pytest.approx(np.nanmean([resnet[metric][best][i] - resnet[metric]["baseline-random"][i]
                                                        for i in ids]))  # fmt: skip


def test_the_border_share_is_that_of_the_stored_maps(smoke) -> None:
    work, results = smoke
    result = results[0]
    name = result["models"]["resnet"]
    stored = load_explanations(work / f"audit-{name}-seed0" / "explanations")
    rows = {row["map"]: row for row in result["rows"] if row["model"] == name}
    for method in (*audit_derm7pt.RESNET_METHODS, "baseline-centre"):
        shares, areas = [], []
        for item in stored.items:
            relevance = np.clip(stored.load(item, method)[0].double().numpy(), 0, None)
            border = np.zeros(relevance.shape, dtype=bool)
            width = [math.ceil(0.1 * n) for n in relevance.shape]  # the outer tenth of each side, as documented
            border[: width[0]] = border[-width[0] :] = True
            border[:, : width[1]] = border[:, -width[1] :] = True
            if relevance.sum() > 0:
                shares.append(relevance[border].sum() / relevance.sum())
                areas.append(border.mean())
        entry = rows[method]["shortcuts"]["border"]
        assert entry["relevance_share"] == pytest.approx(np.mean(shares)) and entry["area_share"] == pytest.approx(
            np.mean(areas))  # fmt: skip


def test_the_printed_command_of_seed_1_reproduces_its_numbers_alone(smoke, tmp_path: Path) -> None:
    work, (_, second) = smoke
    command = shlex.split(second["command"])
    assert command[:2] == ["python", "benchmarks/audit_derm7pt.py"]
    assert audit_derm7pt.main([*command[2:], "--work", str(tmp_path)]) == 0
    [again] = json.loads((tmp_path / "audit_derm7pt.json").read_text())["results"]
    for key in ("models", "sweep_seed", "accuracy", "resnet_best", "audited_images", "comparisons"):
        assert again[key] == second[key], key
    assert [{k: v for k, v in row.items() if k != "s / image"} for row in again["rows"]] == \
        [{k: v for k, v in row.items() if k != "s / image"} for row in second["rows"]]  # fmt: skip
    assert f"    {second['command']}" in (work / "table.md").read_text()


def test_the_tables_have_the_recorded_format(smoke) -> None:
    work, results = smoke
    table = (work / "table.md").read_text()
    section = recorded_section("audit:derm7pt")
    headers = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line
               and line.split("|")[1].strip() in ("run", "model", "difference")]  # fmt: skip
    assert len(set(headers)) == 6 and all(header in section for header in headers)
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines() if line.startswith("| ")]
    for result in results:
        maps = {(row["model"], row["map"]): row for row in result["rows"]}
        for model, methods in (("resnet", audit_derm7pt.RESNET_METHODS), ("bagnet", audit_derm7pt.BAGNET_METHODS)):
            name = result["models"][model]
            for method in methods:
                assert VERDICT.match(maps[name, method]["faithful"]), maps[name, method]
                assert maps[name, f"{method} (random model)"]["faithful"] == "baseline"
            lines = [c for c in cells if c[:2] == [name, methods[0]]]
            assert lines and all(SHARE.match(line[-3]) for line in lines), lines
    assert "    python benchmarks/audit_derm7pt.py --size smoke --seeds 1 --device cpu" in table
