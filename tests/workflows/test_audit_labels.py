"""A multi-label model is audited per label: each label's maps explain that label and are scored against the mask
of its name (``mask_<label>``). Known answers: a map that marks each label's own finding localises for both
labels; a map that marks the other label's finding fails for both."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from medexplain.cli import main
from medexplain.data.writers import png_bytes, write_file, write_manifest
from medexplain.explain import Explanation
from medexplain.explain.targets import resolve_target
from medexplain.metrics.faithfulness import perturbation_curve
from medexplain.models import create_model
from medexplain.workflows.audit import LABELS_FORMAT, LOCALISATION, AuditSettings, audit_run, audit_scores

BRIGHT, DARK = 3.0, -3.0


@dataclass(frozen=True)
class FindingOracle:
    """Marks the bright pixels for label 0 and the dark ones for label 1 (``swapped``: the other way round)."""

    swapped: bool = False
    name: str = field(default="finding-oracle", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target=None) -> Explanation:
        with torch.no_grad():
            logits = model(x)
        resolved = resolve_target(logits, target)
        dark = (resolved.indices[:, 0] == int(not self.swapped)).view(-1, *[1] * (x.ndim - 1))
        maps = torch.where(dark, x[:, :1] < DARK / 2, x[:, :1] > BRIGHT / 2).to(x.dtype)
        return Explanation(maps, resolved.indices.cpu(), "finding-oracle", {}, logits)


def write_findings(folder: Path, n_train: int = 8, n_test: int = 20, side: int = 24, seed: int = 0) -> Path:
    """Grey images with a bright square (label ``bright``, ``mask_bright``) and a dark one (``dark``), each present
    in about half of the images, independently, never overlapping."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_train + n_test):
        image = rng.normal(0.0, 0.3, size=(side, side)).astype(np.float32)
        row = {"image": f"img{i:02d}.npy", "split": "train" if i < n_train else "test"}
        for name, value, half in (("bright", BRIGHT, 0), ("dark", DARK, side // 2)):
            mask = np.zeros((side, side), dtype=bool)
            present = bool(rng.random() < 0.5) or i in (n_train, n_train + 1)  # both in the first two test images
            if present:
                top, left = rng.integers(0, side - 6), rng.integers(half, half + side // 2 - 6)
                mask[top : top + 6, left : left + 6] = True
                image[mask] = value
            row[f"label_{name}"] = int(present)
            row[f"mask_{name}"] = write_file(folder, f"masks/{name}{i:02d}.png", png_bytes(mask))
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / row["image"], image)
        rows.append(row)
    write_manifest(folder, rows)
    return folder


def _card(folder: Path, **extra) -> Path:
    args = {"in_channels": 1, "num_classes": 2, "width": 4, "small_input": True}
    torch.manual_seed(0)
    torch.save(create_model("resnet18", **args).state_dict(), folder / "weights.pth")
    card = {"architecture": "medexplain:resnet18", "arguments": args, "weights": "weights.pth", "output": "sigmoid",
            "classes": ["bright", "dark"], **extra}  # fmt: skip
    (folder / "card.json").write_text(json.dumps(card))
    return folder / "card.json"


@pytest.fixture(scope="module")
def audited_labels(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("labels")
    data = write_findings(root / "data")
    settings = AuditSettings(methods=("saliency",), metrics=(*LOCALISATION, "deletion-auc"), resamples=200)
    own = {"finding-oracle": FindingOracle(), "swapped-oracle": FindingOracle(swapped=True)}
    document = audit_run(_card(root), data, root / "out", settings=settings, explainers=own, batch_size=8,
                         progress=False)  # fmt: skip
    return root, document


def _row(document: dict, method: str) -> dict:
    return next(row for row in document["verdict"] if row["method"] == method)


def test_each_label_is_explained_and_scored_against_its_own_mask(audited_labels) -> None:
    root, document = audited_labels
    assert document["format"] == LABELS_FORMAT and set(document["labels"]) == {"bright", "dark"}
    for label, index in (("bright", 0), ("dark", 1)):
        part = json.loads((root / "out" / "labels" / label / "verdict.json").read_text())
        assert part["mask"] == label and part["target"] == index
        assert part["explains"] == f"label {label!r} (output {index})"
        assert _row(part, "finding-oracle")["localises"]["verdict"] == "pass", label
        assert document["labels"][label]["index"] == index
        assert document["labels"][label]["verdict"] == part["verdict"]
        stored = json.loads((root / "out" / "labels" / label / "explanations" / "index.json").read_text())
        assert all(item["targets"] == [[index]] for item in stored["items"]), label
        swapped = _row(part, "swapped-oracle")
        assert swapped["localises"]["verdict"] == "fail", label  # the other label's finding is not this one's
        assert swapped["metrics"]["pointing-game"]["mean"] < 0.2, label


def test_a_label_without_its_finding_is_left_out_of_localisation(audited_labels) -> None:
    root, _ = audited_labels
    part = json.loads((root / "out" / "labels" / "dark" / "verdict.json").read_text())
    with (root / "data" / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    with_dark = sum(row["split"] == "test" and row["label_dark"] == "1" for row in rows)
    pointing = _row(part, "finding-oracle")["metrics"]["pointing-game"]
    assert pointing["n"] == with_dark and pointing["excluded"] == 20 - with_dark


def test_deletion_of_a_label_follows_its_sigmoid() -> None:
    """The ``sigmoid`` output of a perturbation curve is the sigmoid of its ``logit`` curve, step by step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).double()
    x, maps = torch.randn(4, 1, 6, 6, dtype=torch.float64), torch.rand(4, 6, 6, dtype=torch.float64)
    curves = {output: perturbation_curve(model, x, maps, 2, mode="deletion", steps=6, output=output)
              for output in ("logit", "sigmoid", "probability")}  # fmt: skip
    torch.testing.assert_close(curves["sigmoid"], curves["logit"].sigmoid())
    assert not torch.allclose(curves["sigmoid"], curves["probability"])  # the softmax would mix the labels


def test_labels_without_masks_are_each_audited_on_their_own_sigmoid(audited_labels, tmp_path: Path) -> None:
    """No masks: every label is audited (no localisation), its deletion scores the same as with masks."""
    root, _ = audited_labels
    data = write_findings(tmp_path / "data")
    with (data / "manifest.csv").open(newline="") as handle:
        rows = [{k: v for k, v in row.items() if not k.startswith("mask_")} for row in csv.DictReader(handle)]
    write_manifest(data, rows)
    settings = AuditSettings(methods=("saliency",), metrics=(*LOCALISATION, "deletion-auc"), resamples=200)
    document = audit_run(root / "card.json", data, tmp_path / "out", settings=settings,
                         explainers={"finding-oracle": FindingOracle()}, batch_size=8, progress=False)  # fmt: skip
    assert set(document["labels"]) == {"bright", "dark"}
    for label in ("bright", "dark"):
        part = json.loads((tmp_path / "out" / "labels" / label / "verdict.json").read_text())
        assert part["mask"] is None and set(part["not_applicable"]) >= set(LOCALISATION)
        assert all(row["localises"]["verdict"] == "n/a" for row in part["verdict"])
        ours, theirs = (audit_scores(folder / "labels" / label)["deletion-auc"] for folder in (tmp_path / "out",
                                                                                              root / "out"))
        assert set(ours) == set(theirs) - {"baseline-prior", "swapped-oracle", "swapped-oracle (random model)"}
        for method in ours:
            assert ours[method] == pytest.approx(theirs[method]), (label, method)


def test_a_mask_that_is_no_label_is_one_line(tmp_path: Path, capsys) -> None:
    data = write_findings(tmp_path / "data", n_train=2, n_test=2)
    code = main(["audit", "--model", str(_card(tmp_path)), "--data", str(data), "--out", str(tmp_path / "out"),
                 "--mask", "lesion", "--no-progress"])  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "--mask 'lesion' is not one of the model's labels" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_the_report_shows_one_verdict_per_label(audited_labels) -> None:
    from medexplain.report import build_report

    root, document = audited_labels
    html = build_report(root / "out").read_text()
    for label in ("bright", "dark"):
        assert f"Verdict: which explanation can be trusted (labels/{label})" in html, label
        index = document["labels"][label]["index"]
        said = f"against the {label!r} masks; the maps explain label {label!r} (output {index})"
        assert escape(said) in html, label
