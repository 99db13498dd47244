"""Core API: registries, Explanation, targets, hooks, atomic files."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medexplain.errors import MedexplainError
from medexplain.explain import Explanation, resolve_target
from medexplain.explain.hooks import Hooks, capture_output, find_module, hook_count, last_conv_block
from medexplain.files import atomic_directory, write_text
from medexplain.registry import Registry


def test_registry_lists_and_suggests() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("gradcam", 1, category="cam")
    registry.add("saliency", 2)
    assert registry.available() == ["gradcam", "saliency"]
    assert registry.get("gradcam") == 1
    assert registry.entry("gradcam").metadata == {"category": "cam"}
    expected = r"unknown widget 'gradcm' \(did you mean 'gradcam'\?\); available: gradcam, saliency"
    with pytest.raises(MedexplainError, match=expected):
        registry.get("gradcm")
    with pytest.raises(ValueError, match="twice"):
        registry.add("gradcam", 3)


def test_explanation_validates_shapes() -> None:
    maps = torch.zeros(2, 3, 4, 5)
    explanation = Explanation(maps, torch.zeros(2, 3, dtype=torch.long), "saliency", logits=torch.zeros(2, 4))
    assert (explanation.batch_size, explanation.num_targets) == (2, 3)
    assert explanation.spatial_shape == (4, 5) and explanation.spatial_dims == 2
    with pytest.raises(MedexplainError, match="targets shape"):
        Explanation(maps, torch.zeros(2, 2, dtype=torch.long), "saliency")
    with pytest.raises(MedexplainError, match="maps must be"):
        Explanation(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), "saliency")


def test_explanation_detach_and_move() -> None:
    maps = torch.ones(1, 1, 2, 2, 2, requires_grad=True) * 2
    explanation = Explanation(maps, torch.zeros(1, 1, dtype=torch.long), "x", extras={"d": maps.sum()})
    detached = explanation.detach()
    assert not detached.maps.requires_grad and not detached.extras["d"].requires_grad
    assert detached.spatial_dims == 3


def test_resolve_target_forms() -> None:
    output = torch.tensor([[0.5, 2.0, -1.0], [3.0, 0.0, 1.0]])
    assert resolve_target(output, None).indices.tolist() == [[1], [0]]
    assert resolve_target(output, 2).indices.tolist() == [[2], [2]]
    assert resolve_target(output, [2, 1]).indices.tolist() == [[2], [1]]
    assert resolve_target(output, [[0, 2], [1, 0]]).indices.tolist() == [[0, 2], [1, 0]]
    assert resolve_target(output, "all").indices.tolist() == [[0, 1, 2], [0, 1, 2]]
    resolved = resolve_target(output, [[0, 2], [1, 0]])
    assert resolved.scores(output).tolist() == [[0.5, -1.0], [0.0, 3.0]]
    summed = resolve_target(output, lambda out: torch.sigmoid(out).sum(1))
    assert summed.indices.tolist() == [[-1], [-1]]
    torch.testing.assert_close(summed.scores(output), torch.sigmoid(output).sum(1, keepdim=True))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (3, "target class 3 is out of range for a model with 3 outputs"),
        (-1, "target class -1 is out of range"),
        ([0, 1, 2], "needs 2 entries"),
        (0.5, "must be integers"),
        ("best", "unknown target 'best'"),
    ],
)
def test_resolve_target_rejects_bad_targets(target: object, message: str) -> None:
    with pytest.raises(MedexplainError, match=message):
        resolve_target(torch.zeros(2, 3), target)


def test_resolve_target_rejects_non_logit_output() -> None:
    with pytest.raises(MedexplainError, match=r"model output must be \(B, K\) logits, got \(2, 3, 4\)"):
        resolve_target(torch.zeros(2, 3, 4), 0)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3)
        self.layer = nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()), nn.Conv2d(4, 4, 1))
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(self.stem(x)).mean((2, 3)))


def test_hooks_are_removed_on_success_and_on_error() -> None:
    net = _Net()
    with Hooks() as hooks:
        hooks.forward(net.stem, lambda *_: None)
        hooks.backward(net.head, lambda *_: None)
        assert hook_count(net) == 2
    assert hook_count(net) == 0
    with pytest.raises(RuntimeError), capture_output(net, "layer") as captured:
        net(torch.zeros(1, 1, 8, 8))
        assert captured.output is not None and captured.output.shape == (1, 4, 4, 4)
        raise RuntimeError("boom")
    assert hook_count(net) == 0


def test_find_module_lists_valid_layers() -> None:
    net = _Net()
    assert find_module(net, "layer.0.0") is net.layer[0][0]
    with pytest.raises(MedexplainError, match=r"model has no layer 'layer9'; valid layers: stem, layer, layer.0"):
        find_module(net, "layer9")
    assert last_conv_block(net) == "layer"
    with pytest.raises(MedexplainError, match="no convolutional layer"):
        last_conv_block(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_atomic_directory_leaves_nothing_on_error(tmp_path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        write_text(tmp / "a.txt", "partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(out) as tmp:
        write_text(tmp / "a.txt", "done")
    assert (out / "a.txt").read_text() == "done"
    with pytest.raises(MedexplainError, match="not empty"), atomic_directory(out):
        pass
    with atomic_directory(out, overwrite=True) as tmp:
        write_text(tmp / "b.txt", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["b.txt"]
