"""The memory budget through the workflows and the command line: ``--max-memory`` reaches every method that batches
perturbations, bounds the inputs per model call, and changes no map and no score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medexplain.cli import main
from medexplain.cli.common import parse_bytes
from medexplain.errors import MedexplainError
from medexplain.models import load_run
from medexplain.workflows.evaluate import evaluate_explanations, rebuild_explainers
from medexplain.workflows.explanations import load_explanations

METHODS = "integrated-gradients,occlusion,smoothgrad"


def _explain(run: Path, data: Path, out: Path, *extra: str, methods: str = METHODS) -> int:
    return main(["explain", "--model", str(run), "--data", str(data), "--out", str(out), "--split", "",
                 "--method", methods, "--no-progress", *extra])  # fmt: skip


def test_explain_maps_do_not_depend_on_max_memory(run_and_data, tmp_path: Path) -> None:
    run, data = run_and_data
    assert _explain(run, data, tmp_path / "whole") == 0
    assert _explain(run, data, tmp_path / "one", "--max-memory", "1") == 0  # one input per model call
    whole, one = load_explanations(tmp_path / "whole"), load_explanations(tmp_path / "one")
    assert whole.methods == one.methods and all("max_memory" not in p for p in one.methods.values())
    for a, b in zip(whole.items, one.items, strict=True):
        for method in METHODS.split(","):
            # float32 kernels round differently for other batch sizes (exact in float64: tests/explain/test_budget.py)
            expected = np.load(a.maps[method]).astype(np.float32)
            tolerance = 5e-3 * np.abs(expected).max()  # one of the 50 path points or 25 draws left out: ~2-4 %
            np.testing.assert_allclose(np.load(b.maps[method]), expected, rtol=0, atol=tolerance)
    # the budget is not a parameter of the maps: the folder continues under another one
    assert _explain(run, data, tmp_path / "one", "--max-memory", "2G") == 0


@pytest.mark.parametrize(("text", "problem"), [("lots", "expected a size such as 512M"), ("0.1", "at least one byte")])
def test_bad_max_memory_is_a_one_line_error(run_and_data, tmp_path: Path, capsys, text: str, problem: str) -> None:
    run, data = run_and_data
    assert _explain(run, data, tmp_path / "bad", "--max-memory", text) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--max-memory" in error and problem in error
    assert not (tmp_path / "bad").exists()


def test_sizes_read_in_binary_units() -> None:
    assert parse_bytes("4G", "--max-memory") == 4 * 2**30
    assert parse_bytes("512m", "--max-memory") == 512 * 2**20
    assert parse_bytes("1.5KiB", "--max-memory") == 1536
    assert parse_bytes("2gb", "--max-memory") == 2 * 2**30
    assert parse_bytes("100000", "--max-memory") == 100000
    assert parse_bytes(None, "--max-memory") is None
    with pytest.raises(MedexplainError, match="--max-memory: expected a size"):
        parse_bytes("G", "--max-memory")


class _Widest(nn.Module):
    """Records the largest batch that reaches ``model``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.widest = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.widest = max(self.widest, len(x))
        return self.model(x)


def test_evaluation_passes_the_budget_to_metrics_and_re_run_explainers(run_and_data, tmp_path: Path) -> None:
    run, data = run_and_data
    assert _explain(run, data, tmp_path / "maps", methods="saliency,smoothgrad") == 0
    stored = load_explanations(tmp_path / "maps")
    network, _, dataset = load_run(run, data, None)
    names = ["deletion-auc", "faithfulness-correlation", "max-sensitivity"]
    model = _Widest(network)
    default = evaluate_explanations(stored, dataset, names, model=model, explainers=rebuild_explainers(stored.methods),
                                    batch_size=3, progress=False)  # fmt: skip
    assert model.widest > 1
    model.widest = 0
    bounded = evaluate_explanations(stored, dataset, names, model=model, batch_size=3, max_memory=1,
                                    explainers=rebuild_explainers(stored.methods, max_memory=1), progress=False)
    assert model.widest == 1  # every model call of the metrics and of the re-run explainers: one input
    for a, b in zip(default.rows, bounded.rows, strict=True):  # float32: rounding differs with the batch size
        assert a["metric"] == b["metric"] and a["score"] == pytest.approx(b["score"], rel=1e-3, abs=1e-6)


def test_explainers_stored_with_a_batch_size_are_rebuilt() -> None:
    """Folders written before the budget hold ``batch_size`` for these methods (it never changed the maps)."""
    explainers = rebuild_explainers({"integrated-gradients": {"steps": 7, "batch_size": 64, "name": "x"}}, 1024)
    assert explainers["integrated-gradients"].steps == 7 and explainers["integrated-gradients"].max_memory == 1024


def test_the_audit_passes_its_budget_to_the_methods_and_metrics(tmp_path: Path) -> None:
    from medexplain.models import create_model
    from medexplain.workflows.audit import applicable_methods

    model = create_model("resnet18", in_channels=1, num_classes=2, width=4, small_input=True).eval()
    methods, _ = applicable_methods(model, torch.randn(1, 1, 16, 16), ["integrated-gradients", "occlusion"], None, {},
                                    max_memory=3 * 2**20)  # fmt: skip
    assert {name: explainer.max_memory for name, explainer in methods.items()} == {
        "integrated-gradients": 3 * 2**20, "occlusion": 3 * 2**20}
