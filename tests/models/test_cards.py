"""A user's own model, from every source a model card can name, loads to the same outputs; weights are never
unpickled; a card that does not match names what differs."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medexplain.errors import MedexplainError
from medexplain.models import load
from medexplain.models.cards import method_params_for

FACTORY = '''
import torch
from monai.networks.nets import DenseNet121


def build(width: int = 1):
    return DenseNet121(spatial_dims=2, in_channels=1, out_channels=3, init_features=8 * width, growth_rate=8,
                       block_config=(2, 2))
'''
ARGUMENTS = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "init_features": 8, "growth_rate": 8,
             "block_config": [2, 2]}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, torch.Tensor]:
    """A small MONAI DenseNet-121 "trained elsewhere" (random weights, BatchNorm statistics set), saved the ways
    users save models, and an input batch."""
    from monai.networks.nets import DenseNet121

    folder = tmp_path_factory.mktemp("user")
    torch.manual_seed(0)
    model = DenseNet121(**{**ARGUMENTS, "block_config": (2, 2)})
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model.eval()
    torch.save(model.state_dict(), folder / "model.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, folder / "ddp.pt")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    x = torch.randn(2, 1, 32, 32)
    torch.jit.save(torch.jit.trace(model, x), folder / "model.ts")
    (folder / "nets.py").write_text(FACTORY)
    return folder, model, x


def _card(folder: Path, name: str, **card) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"classes": ["normal", "benign", "malignant"], **card}))
    return path


@pytest.mark.parametrize(
    "card",
    [
        {"architecture": "monai:DenseNet121", "arguments": ARGUMENTS, "weights": "model.pth"},
        {"architecture": "monai:DenseNet121", "arguments": ARGUMENTS, "weights": "model.safetensors"},
        {"architecture": "monai:DenseNet121", "arguments": ARGUMENTS, "weights": "ddp.pt"},
        {"architecture": "factory:nets.py:build", "arguments": {"width": 1}, "weights": "model.pth", "in_channels": 1},
        {"torchscript": "model.ts", "in_channels": 1},
    ],
    ids=["state-dict", "safetensors", "ddp-prefix-nested", "factory", "torchscript"],
)
def test_every_model_source_gives_the_same_outputs(trained, card) -> None:
    folder, model, x = trained
    loaded, config = load(_card(folder, "card", **card))
    assert not loaded.training and config["class_names"] == ["normal", "benign", "malignant"]
    assert config["model_args"]["in_channels"] == 1 and config["task"] == "ce"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_a_registered_medexplain_model_from_a_card(tmp_path: Path) -> None:
    from medexplain.models import create_model

    args = {"in_channels": 1, "num_classes": 2, "width": 8}
    model = create_model("resnet18", **args).eval()
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    loaded, _ = load(_card(tmp_path, "card", architecture="medexplain:resnet18", arguments=args,
                           weights="weights.pth", output="sigmoid"))  # fmt: skip
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_method_params_of_a_card_are_overridden_key_by_key() -> None:
    config = {"method_params": {"occlusion": {"window": 16, "stride": 8}, "smoothgrad": {"samples": 4}}}
    given = {"occlusion": {"stride": 4}, "integrated-gradients": {"steps": 8}}
    merged = method_params_for(config, ["occlusion", "saliency"], given)
    assert merged == {"occlusion": {"window": 16, "stride": 4}, "integrated-gradients": {"steps": 8}}
    assert method_params_for({}, ["saliency"], None) == {}


class _WritesAFile:
    """Unpickling this object would run ``os.system``: what a malicious checkpoint does."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_weights_are_never_unpickled(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    with (tmp_path / "evil.pth").open("wb") as handle:
        pickle.dump({"weight": _WritesAFile(target)}, handle)
    card = _card(tmp_path, "evil", architecture="monai:DenseNet121", arguments=ARGUMENTS, weights="evil.pth")
    with pytest.raises(MedexplainError, match=r"evil.pth: not a plain state dict of tensors \(refused to load it"):
        load(card)
    assert not target.exists()


def test_a_state_dict_of_another_architecture_names_the_first_tensor_that_differs(trained) -> None:
    folder, *_ = trained
    other = {**ARGUMENTS, "out_channels": 5}
    card = _card(folder, "other", architecture="monai:DenseNet121", arguments=other, weights="model.pth")
    message = r"model.pth: checkpoint does not match the model: tensor 'class_layers.out.weight' has shape \(3, 28\)"
    with pytest.raises(MedexplainError, match=message + r", the model expects \(5, 28\)"):
        load(card)
    missing = _card(folder, "missing", architecture="medexplain:resnet18", arguments={"in_channels": 1},
                    weights="model.pth")  # fmt: skip
    with pytest.raises(MedexplainError, match=r"does not match the model: tensor 'conv1\.weight' is missing"):
        load(missing)


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ({"torchscript": "model.pth"}, "model.pth: not a TorchScript archive"),
        ({"architecture": "monai:DenseNet12", "arguments": {}, "weights": "model.pth"},
         "MONAI has no network 'DenseNet12' (did you mean 'DenseNet121'?)"),
        ({"architecture": "keras:Net", "weights": "model.pth"}, "must be one of medexplain:<name>, monai:<name>"),
        ({"architecture": "factory:nets.py:nope", "weights": "model.pth"}, "nets.py: has no function 'nope'"),
        ({"architecture": "monai:DenseNet121"}, "an architecture needs its weights"),
        ({"architecture": "monai:DenseNet121", "weights": "model.pth", "weigths": 1}, "did you mean 'weights'"),
        ({"torchscript": "model.ts", "output": "softmaks"}, "output must be one of softmax, sigmoid"),
        ({"torchscript": "model.ts", "method_params": {"occlusion": 8}}, "method_params must map method names"),
    ],
)
def test_bad_cards_are_one_line_errors(trained, card, message) -> None:
    folder, *_ = trained
    with pytest.raises(MedexplainError, match=re.escape(message)):
        load(_card(folder, "bad", **card))
