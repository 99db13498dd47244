"""``evaluate_explanations``: the deletion/insertion scores and their mean curves from one set of
forward passes; the curves equal those of the former second pass (``mean_curves``, now removed) and the scores
equal the metric functions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from medexplain.cli import main
from medexplain.data.synth import write_deformation
from medexplain.metrics import forward_passes, get_metric
from medexplain.metrics.faithfulness import curve_area, perturbation_curve
from medexplain.models import create_model, load_run, save_run
from medexplain.workflows import evaluate as evaluate_workflow
from medexplain.workflows.evaluate import (
    EvaluationState,
    _context,
    evaluate_explanations,
    method_batches,
    stored_units,
)
from medexplain.workflows.explanations import load_explanations

NAMES = ["deletion-auc", "gini", "insertion-auc"]


class CountingModel(nn.Module):
    """Wraps a model and counts its calls and the inputs (rows) it scores."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls, self.rows = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += len(x)
        return self.model(x)


def _two_pass_curves(stored, dataset, model: nn.Module, batch_size: int) -> dict:
    """The mean curves as the former second pass (``mean_curves``) computed them: again per batch, at the
    metrics' defaults (20 steps; deletion to 0, insertion from a blurred input), summed in float64."""
    sums: dict[str, dict[str, torch.Tensor]] = {}
    counts: dict[str, int] = {}
    for batch in method_batches(stored_units(stored), batch_size):
        context = _context(EvaluationState(stored, dataset, (), model), batch)
        method = batch[0].method
        counts[method] = counts.get(method, 0) + len(batch)
        for mode, baseline in (("deletion", 0.0), ("insertion", "blur")):
            curve = perturbation_curve(model, context["x"], context["maps"], context["target"], mode=mode, steps=20,
                                       baseline=baseline).double().sum(0)  # fmt: skip
            per_method = sums.setdefault(method, {})
            per_method[mode] = per_method[mode] + curve if mode in per_method else curve
    return {m: {mode: (total / counts[m]).tolist() for mode, total in c.items()} for m, c in sums.items()}


def test_scores_and_mean_curves_come_from_one_set_of_forward_passes(tmp_path: Path, monkeypatch) -> None:
    data = write_deformation(tmp_path / "data", n=5, spatial_dims=2, size=24, seed=0, show_progress=False)
    torch.manual_seed(0)
    args = {"in_channels": 1, "num_classes": 2, "spatial_dims": 2}
    run = save_run(create_model("bagnet9-light", **args), tmp_path / "run", "bagnet9-light", args)
    explained = tmp_path / "maps"
    command = ["explain", "--model", str(run), "--data", str(data), "--method", "saliency,gradcam", "--split", "",
               "--out", str(explained), "--no-progress"]  # fmt: skip
    assert main(command) == 0
    network, _config, dataset = load_run(run, data, None)
    model = CountingModel(network.eval())
    stored = load_explanations(explained)
    units = stored_units(stored)
    assert len(units) == 10  # 5 images x 2 methods, one target each

    old = _two_pass_curves(stored, dataset, network, batch_size=2)
    rows, empty, _undefined, curves, _chance = evaluate_explanations(stored, dataset, NAMES, model=model, batch_size=2,
                                                         progress=False)  # fmt: skip
    assert empty == 0
    assert curves == old  # the same mean curves, bit for bit
    assert set(curves) == {"saliency", "gradcam"} and all(len(c["deletion"]) == 21 for c in curves.values())

    model.calls = model.rows = 0
    evaluate_explanations(stored, dataset, NAMES, model=model, batch_size=2, progress=False)
    # every (image, step) pair of each curve reaches the model once: steps + 1 rows per image and curve metric
    assert model.rows == len(units) * 2 * forward_passes("deletion-auc")
    # per batch and curve metric: one call on the clean inputs, one on all perturbed steps (<= 64 rows)
    assert model.calls == len(list(method_batches(units, 2))) * 2 * 2

    for name in NAMES:  # the scores are the metric functions' own, batch by batch
        expected = []
        for batch in method_batches(units, 2):
            context = _context(EvaluationState(stored, dataset, (), network), batch)
            metric = get_metric(name)
            if name == "gini":
                expected += metric(context["maps"]).double().tolist()
            else:
                expected += metric(context["maps"], model=network, x=context["x"], target=context["target"]).tolist()
        assert [row["score"] for row in rows if row["metric"] == name] == expected
    for method, modes in curves.items():  # the area under a mean curve is the mean score
        for name, mode in (("deletion-auc", "deletion"), ("insertion-auc", "insertion")):
            scores = [row["score"] for row in rows if row["metric"] == name and row["method"] == method]
            area = curve_area(torch.tensor([modes[mode]], dtype=torch.float64))[0]
            torch.testing.assert_close(area, torch.tensor(scores, dtype=torch.float64).mean(), rtol=0, atol=1e-6)

    assert evaluate_explanations(stored, dataset, ["gini"], model=model, progress=False).curves == {}

    # `medexplain evaluate` writes these curves after one pass too
    counted, build_state = [], evaluate_workflow.run_evaluation_state

    def counting_state(*args, **kwargs):
        state = build_state(*args, **kwargs)
        counted.append(CountingModel(state.model))
        return dataclasses.replace(state, model=counted[-1])

    monkeypatch.setattr(evaluate_workflow, "run_evaluation_state", counting_state)
    out = tmp_path / "scores"
    assert (
        main(
            [
                "evaluate",
                "--explanations",
                str(explained),
                "--data",
                str(data),
                "--model",
                str(run),
                "--metrics",
                ",".join(NAMES),
                "--batch-size",
                "2",
                "--resamples",
                "20",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert json.loads((out / "summary.json").read_text())["curves"] == old
    # and one input, once per model and input shape, to measure its activations (medexplain.explain.budget)
    assert counted[0].rows == len(units) * 2 * forward_passes("deletion-auc") + 1
