"""The audit's verdicts on cases where the right answer is known: a map that is the lesion mask localises, a
baseline audited as a method does not beat itself, a map that ignores the model fails the randomisation check;
3D maps come back on the source scan's grid; bad input is one line and leaves nothing behind."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from medexplain.cli import main
from medexplain.data.writers import png_bytes, write_file, write_manifest
from medexplain.explain import Explanation, create_explainer
from medexplain.explain.targets import resolve_target
from medexplain.models import create_model, load, run_dataset, save_run
from medexplain.workflows.audit import LOCALISATION, AuditSettings, audit_run
from medexplain.workflows.explanations import load_explanations


@dataclass(frozen=True)
class LesionOracle:
    """Knows where the lesion is: the bright voxels of the first channel (the test data's lesions are bright)."""

    name: str = field(default="oracle", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target=None) -> Explanation:
        with torch.no_grad():
            logits = model(x)
        resolved = resolve_target(logits, target)
        maps = (x[:, :1] > 1.5).to(x.dtype)
        return Explanation(maps, resolved.indices.cpu(), self.name, {}, logits)


@dataclass(frozen=True)
class FrameShortcut:
    """Relevance on the outer pixel ring only: what a model reading the image frame would show."""

    name: str = field(default="frame", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target=None) -> Explanation:
        with torch.no_grad():
            logits = model(x)
        resolved = resolve_target(logits, target)
        maps = torch.ones_like(x[:, :1])
        maps[..., 1:-1, 1:-1] = 0
        return Explanation(maps, resolved.indices.cpu(), self.name, {}, logits)


def write_lesions(folder: Path, n_train: int = 16, n_test: int = 30, side: int = 24, seed: int = 0) -> Path:
    """Grey ``.npy`` images with one bright square lesion each (its mask), anywhere in the image, and a darker
    square elsewhere whose edges are stronger than the lesion's (so an edge detector points beside the lesion)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_train + n_test):
        image = rng.normal(0.0, 0.3, size=(side, side)).astype(np.float32)
        mask = np.zeros((side, side), dtype=bool)
        top, left = rng.integers(0, side - 6, size=2)
        mask[top : top + 6, left : left + 6] = True
        hole = np.zeros_like(mask)
        while not hole.any() or (hole & mask).any():
            hole[:] = False
            corner = rng.integers(0, side - 6, size=2)
            hole[corner[0] : corner[0] + 6, corner[1] : corner[1] + 6] = True
        image[hole] = -6.0
        image[mask] = 3.0
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"img{i:02d}.npy", image)
        rows.append({"image": f"img{i:02d}.npy", "split": "train" if i < n_train else "test", "label": i % 2,
                     "mask_lesion": write_file(folder, f"masks/img{i:02d}.png", png_bytes(mask))})  # fmt: skip
    write_manifest(folder, rows)
    return folder


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("audit")
    data = write_lesions(root / "data")
    torch.manual_seed(0)
    args = {"in_channels": 1, "num_classes": 2, "width": 4, "small_input": True}
    run = save_run(create_model("resnet18", **args), root / "run", "resnet18", args)
    document = audit_run(run, data, root / "out", settings=SETTINGS, explainers=_own(), batch_size=8, progress=False)
    return root, document


SETTINGS = AuditSettings(methods=("saliency",), metrics=(*LOCALISATION, "deletion-auc", "model-randomisation"),
                         metric_params={"model-randomisation": {"layers": 2}}, resamples=200)  # fmt: skip
"""The audit of the ``audited`` fixture (and of the same data without masks)."""


def _own() -> dict:
    """The user's own methods of the ``audited`` fixture: maps whose right verdicts are known."""
    return {"oracle": LesionOracle(), "frame": FrameShortcut(), "centre-as-method": create_explainer("baseline-centre"),
            "edges-as-method": create_explainer("baseline-edges")}  # fmt: skip


def _row(document: dict, method: str) -> dict:
    return next(row for row in document["verdict"] if row["method"] == method)


def test_the_lesion_mask_localises_and_the_baselines_do_not_beat_themselves(audited) -> None:
    root, document = audited
    oracle = _row(document, "oracle")
    assert oracle["localises"]["verdict"] == "pass"
    assert set(oracle["localises"]["better_on"]) >= {"pointing-game", "mask-auroc", "relevance-mass"}
    assert _row(document, "centre-as-method")["localises"]["verdict"] == "fail"
    centre = [c for c in document["comparisons"] if c["method"] == "centre-as-method" and c["metric"] in LOCALISATION]
    assert len(centre) == len(LOCALISATION) and not any(c["better"] for c in centre)
    assert all(c["baseline_mean"] >= c["mean"] for c in centre)  # the best baseline is at least the centre itself
    assert document["ranking"][0] == "oracle"
    assert json.loads((root / "out" / "verdict.json").read_text())["ranking"] == document["ranking"]


def test_maps_that_ignore_the_model_fail_the_randomisation_check(audited) -> None:
    _, document = audited
    for method in ("edges-as-method", "oracle"):
        randomisation = _row(document, method)["randomisation"]
        assert randomisation["verdict"] == "fail" and randomisation["similarity"] == pytest.approx(1.0), method


def test_the_verdict_records_what_it_rests_on(audited) -> None:
    root, document = audited
    assert document["format"] == "medexplain-audit/1" and document["mask"] == "lesion"
    assert document["cam_layer"] == "layer4"
    assert set(document["baselines"]) >= {"baseline-constant", "baseline-random", "baseline-centre", "baseline-prior",
                                          "baseline-edges", "saliency (random model)"}  # fmt: skip
    comparison = next(c for c in document["comparisons"] if c["method"] == "oracle" and c["metric"] == "pointing-game")
    baseline_mean = document["baselines"][comparison["baseline"]]["pointing-game"]["mean"]
    assert comparison["baseline_mean"] == pytest.approx(baseline_mean)
    assert 0 <= comparison["p_holm"] <= 1 and comparison["p_holm"] >= comparison["p"]
    stored = json.loads((root / "out" / "explanations" / "index.json").read_text())
    assert set(stored["methods"]) == {"oracle", "frame", "centre-as-method", "edges-as-method", "saliency",
                                      *document["settings"]["baselines"]}  # fmt: skip


def test_relevance_on_the_image_frame_is_flagged_and_maps_in_proportion_are_not(audited) -> None:
    _, document = audited
    assert _row(document, "frame")["shortcuts"] == ["border"]
    border = document["shortcuts"]["border"]
    assert border["frame"]["relevance_share"] == 1.0 and border["frame"]["ratio_ci"][0] > 2
    assert border["baseline-constant"]["ratio"] == pytest.approx(1.0)  # a flat map: in proportion to the area
    assert border["baseline-constant"]["area_share"] == pytest.approx(1 - (18 / 24) ** 2)  # 3-pixel band of 24
    assert not border["baseline-constant"]["flagged"] and not border["oracle"]["flagged"]
    assert "border" not in _row(document, "oracle")["shortcuts"]


def test_a_class_index_target_explains_that_class_of_every_image(audited, tmp_path: Path) -> None:
    root, _ = audited
    network, config = load(root / "run")
    dataset = run_dataset(config, root / "data", "test")
    x = torch.stack([dataset[i].image for i in range(len(dataset))])
    with torch.no_grad():
        predicted = network(x).argmax(1).tolist()
    stored = json.loads((root / "out" / "explanations" / "index.json").read_text())  # the default: predicted
    assert [np.ravel(item["targets"]).tolist() for item in stored["items"]] == [[p] for p in predicted]
    settings = AuditSettings(methods=("saliency",), baselines=("baseline-constant",), randomised_model=False,
                             metrics=("mask-auroc",), resamples=50)  # fmt: skip
    saliency = create_explainer("saliency")
    for target in (0, 1):
        out = tmp_path / f"class{target}"
        document = audit_run(root / "run", root / "data", out, target=target, settings=settings, progress=False)
        assert document["target"] == target and document["explains"] == f"class {target}"  # a run without names
        explained = load_explanations(out / "explanations")
        assert all(item.targets == (target,) for item in explained.items)
        for item in explained.items[:3]:
            expected = saliency(network, x[item.index : item.index + 1], target).maps[0]
            assert torch.allclose(explained.load(item, "saliency")[0], expected, atol=1e-6)


def _without_masks(folder: Path) -> Path:
    """The lesion test data with the mask column dropped from its manifest (a user's data without annotations)."""
    data = write_lesions(folder)
    with (data / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = [{k: v for k, v in row.items() if k != "mask_lesion"} for row in csv.DictReader(handle)]
    write_manifest(data, rows)
    return data


def test_a_dataset_without_masks_is_audited_on_everything_but_localisation(audited, tmp_path: Path, capsys) -> None:
    """Without masks: the same faithfulness and randomisation scores as the audit with masks, the shortcut check,
    no localisation (n/a, recorded why), the ranking by deletion AUC; CLI and report say so."""
    from medexplain.report import build_report
    from medexplain.workflows.audit import audit_scores

    root, masked = audited
    data = _without_masks(tmp_path / "data")
    out = tmp_path / "out"
    document = audit_run(root / "run", data, out, settings=SETTINGS, explainers=_own(), batch_size=8, progress=False)
    assert document["mask"] is None and document["rules"]["primary"] == "deletion-auc"
    assert set(document["not_applicable"]) >= {*LOCALISATION, "baseline-prior"}
    assert not any(c["metric"] in LOCALISATION for c in document["comparisons"])
    assert all(row["localises"]["verdict"] == "n/a" for row in document["verdict"])
    ours, theirs = audit_scores(out), audit_scores(root / "out")
    assert set(ours) == {"deletion-auc", "model-randomisation"}
    for metric in ours:
        for method, per_image in ours[metric].items():
            assert per_image == pytest.approx(theirs[metric][method], nan_ok=True), (metric, method)
    unadjusted = {(c["method"], c["metric"]): c["p"] for c in masked["comparisons"]}
    assert all(c["p"] == pytest.approx(unadjusted[c["method"], c["metric"]]) for c in document["comparisons"])
    assert _row(document, "frame")["shortcuts"] == ["border"] and _row(document, "oracle")["shortcuts"] == []
    assert _row(document, "edges-as-method")["randomisation"]["verdict"] == "fail"
    passes = {row["method"]: sum(row[k]["verdict"] == "pass" for k in ("faithful", "randomisation"))
              for row in document["verdict"]}  # fmt: skip
    deletion = {row["method"]: row["metrics"]["deletion-auc"]["mean"] for row in document["verdict"]}
    assert document["ranking"] == sorted(deletion, key=lambda m: (-passes[m], deletion[m]))
    assert "without masks" in build_report(out).read_text(encoding="utf-8")
    code = main(["audit", "--model", str(root / "run"), "--data", str(data), "--out", str(tmp_path / "cli"),
                 "--methods", "saliency", "--metrics", "deletion-auc,gini", "--resamples", "50", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "no masks: localisation not assessed" in printed
    assert "baseline-prior: not applicable" in printed


def _affine() -> np.ndarray:
    """Axes permuted and flipped, anisotropic voxels, an offset: far from the identity."""
    return np.array([[0, 0, -2.5, 30.0], [-1.0, 0, 0, 12.0], [0, 1.5, 0, -7.0], [0, 0, 0, 1]])


def test_3d_maps_are_written_on_the_source_grid_with_its_affine(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):
        volume = rng.normal(0, 0.3, size=(12, 10, 8)).astype(np.float32)
        mask = np.zeros(volume.shape, dtype=np.uint8)
        corner = rng.integers(0, [9, 7, 5])
        mask[corner[0] : corner[0] + 3, corner[1] : corner[1] + 3, corner[2] : corner[2] + 3] = 1
        volume[mask == 1] = 3.0
        for name, array in ((f"v{i}.nii.gz", volume), (f"m{i}.nii.gz", mask)):
            nibabel.save(nibabel.Nifti1Image(array, _affine()), str(tmp_path / name))
        rows.append({"image": f"v{i}.nii.gz", "split": "test", "label": i % 2, "mask_lesion": f"m{i}.nii.gz"})
    write_manifest(tmp_path, rows)
    args = {"in_channels": 1, "num_classes": 2, "spatial_dims": 3, "width": 4, "small_input": True}
    run = save_run(create_model("resnet18", **args), tmp_path / "run", "resnet18", args)
    settings = AuditSettings(methods=(), baselines=("baseline-constant",), randomised_model=False,
                             metrics=("pointing-game",), resamples=50)  # fmt: skip
    audit_run(run, tmp_path, tmp_path / "out", size=8, settings=settings, explainers={"oracle": LesionOracle()},
              progress=False)  # fmt: skip
    for i in range(8):
        (path,) = (tmp_path / "out" / "nifti" / "oracle").glob(f"v{i}*")
        written = nibabel.load(str(path))
        np.testing.assert_array_equal(written.affine, _affine())
        source_mask = np.asarray(nibabel.load(str(tmp_path / f"m{i}.nii.gz")).dataobj)
        assert written.shape == source_mask.shape  # resized back from 8^3 to the source's 12 x 10 x 8
        peak = np.unravel_index(int(np.argmax(np.asarray(written.dataobj))), written.shape)
        assert source_mask[peak] == 1, i


@pytest.mark.parametrize(
    ("card", "extra", "message"),
    [
        ({"architecture": "medexplain:resnet18", "arguments": {"in_channels": 3, "num_classes": 2, "width": 4},
          "weights": "weights.pth"}, [], "the model expects 3-channel images; "),
        ({"architecture": "medexplain:resnet18", "arguments": {"in_channels": 1, "num_classes": 2, "width": 8},
          "weights": "weights.pth"}, [], "checkpoint does not match the model"),
        ({"torchscript": "weights.pth", "in_channels": 1}, [], "not a TorchScript archive"),
        ({"architecture": "medexplain:resnet18", "arguments": {"in_channels": 1, "num_classes": 2, "width": 4},
          "weights": "weights.pth"}, ["--mask", "tumour"], "--mask 'tumour' is not in"),
        ({"architecture": "medexplain:resnet18", "arguments": {"in_channels": 1, "num_classes": 2, "width": 4},
          "weights": "weights.pth"}, ["--landmarks", "disc"], "--landmarks 'disc' is not in"),
    ],
    ids=["channels", "other-architecture", "not-torchscript", "unknown-mask", "unknown-landmark"],
)
def test_bad_input_is_one_line_and_leaves_nothing(card, extra, message, tmp_path: Path, capsys) -> None:
    data = write_lesions(tmp_path / "data", n_train=2, n_test=2)
    saved = card.get("arguments", {}) if "3-channel" in message else {"in_channels": 1, "num_classes": 2, "width": 4}
    torch.save(create_model("resnet18", **saved).state_dict(), tmp_path / "weights.pth")  # what the user trained
    (tmp_path / "card.json").write_text(json.dumps(card))
    out = tmp_path / "out"
    code = main(["audit", "--model", str(tmp_path / "card.json"), "--data", str(data), "--out", str(out),
                 "--no-progress", *extra])  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not out.exists()


def test_the_report_opens_with_the_verdict_in_a_browser(audited) -> None:
    from tests.report._browser import opened_report

    from medexplain.report import build_report

    root, document = audited
    with opened_report(build_report(root / "out"), "report-audit.png") as (page, errors):
        first = page.locator("main section").first
        assert first.get_attribute("id").startswith("audit-")
        assert first.locator("h2").inner_text().startswith("Verdict")
        cells = first.locator("table").first.locator("tbody tr td:first-child").all_inner_texts()
        assert cells == document["ranking"]  # the methods x criteria table, in ranking order
        assert "pass" in first.locator("table").first.locator("tbody tr").first.inner_text()
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
        assert widths and min(widths) >= 256  # thumbnails large enough to see a lesion
    assert errors == []


TRANSFORMER_METHODS = {"attention-rollout", "attention-gradient", "attnlrp", "cp-lrp", "gradcam", "gradcam++",
                       "hirescam", "layercam", "saliency", "input-x-gradient", "smoothgrad", "integrated-gradients",
                       "occlusion"}  # fmt: skip
LRP_FOR_CNNS = {"lrp-epsilon", "lrp-epsilon-plus", "lrp-epsilon-plus-flat", "lrp-alpha2-beta1", "lrp-epsilon-gamma-box"}


def test_a_vision_transformer_is_audited_with_the_methods_made_for_it(tmp_path: Path) -> None:
    """Default methods on a ViT: the attention methods, AttnLRP and CP-LRP, CAMs on the tokens entering the last
    attention, gradients and occlusion; the LRP composites made for CNNs are recorded as not applicable with their
    reason. The report renders the audit."""
    from medexplain.report import build_report

    data = write_lesions(tmp_path / "data", n_train=4, n_test=6)
    args = {"in_channels": 1, "num_classes": 2, "img_size": 24, "patch_size": 6, "hidden_size": 12, "mlp_dim": 24,
            "num_layers": 2, "num_heads": 3}  # fmt: skip
    torch.manual_seed(0)
    run = save_run(create_model("vit", **args), tmp_path / "run", "vit", args)
    light = {"integrated-gradients": {"steps": 4}, "smoothgrad": {"samples": 2}, "occlusion": {"window": 6}}
    settings = AuditSettings(baselines=("baseline-centre", "baseline-random"), randomised_model=False,
                             metrics=("pointing-game", "mask-auroc"), method_params=light, resamples=50)  # fmt: skip
    document = audit_run(run, data, tmp_path / "out", settings=settings, batch_size=6, progress=False)
    assert {row["method"] for row in document["verdict"]} == TRANSFORMER_METHODS
    assert document["cam_layer"] == "vit.blocks.1.attn:input"
    assert set(document["not_applicable"]) == LRP_FOR_CNNS | {"evidence"}
    for name in LRP_FOR_CNNS:
        assert document["not_applicable"][name].endswith("explain transformers with attnlrp or cp-lrp"), name
    stored = json.loads((tmp_path / "out" / "explanations" / "index.json").read_text())
    assert set(stored["methods"]) == TRANSFORMER_METHODS | {"baseline-centre", "baseline-random"}
    html = build_report(tmp_path / "out").read_text()
    assert all(f">{name}<" in html for name in ("attention-rollout", "attnlrp", "baseline-centre")), "report rows"


def test_a_cnn_audit_leaves_the_transformer_methods_out() -> None:
    from tests.explain.models import ResNetLike

    from medexplain.workflows.audit import applicable_methods

    methods, skipped = applicable_methods(ResNetLike(2).eval(), torch.randn(1, 2, 16, 16), None, "layer2", {})
    assert {"attention-rollout", "attention-gradient", "attnlrp", "cp-lrp"} <= set(skipped)
    assert skipped["attnlrp"] == skipped["cp-lrp"] == "made for transformers; the model has no attention module"
    assert "has no attention module" in skipped["attention-rollout"]
    assert LRP_FOR_CNNS | {"gradcam", "saliency", "occlusion"} <= set(methods)
