"""Run folders: weights round-trip through safetensors; mismatching or corrupt checkpoints are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medexplain.errors import MedexplainError
from medexplain.models import create_model, load, save_run


def _run_folder(tmp_path: Path, name: str, **model_args) -> tuple[Path, torch.nn.Module]:
    model = create_model(name, **model_args)
    with torch.no_grad():  # make BatchNorm buffers differ from a fresh model's
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-1, 1)
                module.num_batches_tracked.fill_(7)
    return save_run(model, tmp_path, name, model_args), model


@pytest.mark.parametrize(
    "name, model_args, shape",
    [
        ("sparse-bagnet9-light", {"in_channels": 3, "num_classes": 5, "spatial_dims": 2}, (2, 3, 28, 28)),
        ("bagnet17-light", {"in_channels": 1, "num_classes": 2, "spatial_dims": 3}, (1, 1, 20, 20, 20)),
        ("resnet18", {"in_channels": 1, "num_classes": 3, "spatial_dims": 3, "small_input": True}, (2, 1, 8, 8, 8)),
        ("densenet121", {"in_channels": 1, "num_classes": 2, "spatial_dims": 2}, (2, 1, 32, 32)),
    ],
)
def test_round_trip_reproduces_the_model(tmp_path: Path, name: str, model_args: dict, shape: tuple) -> None:
    run, original = _run_folder(tmp_path, name, **model_args)
    loaded, config = load(run)
    assert config["model"] == name and not loaded.training
    for (key, a), (key_b, b) in zip(original.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert key == key_b
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    x = torch.randn(shape)
    torch.testing.assert_close(loaded(x), original.eval()(x), atol=0, rtol=0)


def test_checkpoint_of_another_architecture_names_file_and_tensor(tmp_path: Path) -> None:
    run, _ = _run_folder(tmp_path, "bagnet9-light", in_channels=3, num_classes=2)
    (run / "config.json").write_text(json.dumps({"model": "bagnet9-light", "model_args": {"num_classes": 4}}))
    with pytest.raises(
        MedexplainError, match=r"model\.safetensors: checkpoint does not match.*'class_bias' has shape \(2,\)"
    ):
        load(run)
    (run / "config.json").write_text(json.dumps({"model": "bagnet9", "model_args": {"num_classes": 2}}))
    with pytest.raises(MedexplainError, match=r"model\.safetensors: .*'conv1\.weight' has shape \(16, 3, 1, 1\)"):
        load(run)
    (run / "config.json").write_text(json.dumps({"model": "resnet18", "model_args": {"num_classes": 2}}))
    with pytest.raises(MedexplainError, match=r"model\.safetensors: .*tensor 'conv1\.weight' has shape"):
        load(run)


def test_missing_and_unexpected_tensors_are_errors(tmp_path: Path) -> None:
    run, model = _run_folder(tmp_path, "bagnet9-light", in_channels=1, num_classes=2)
    state = dict(model.state_dict())
    del state["layer2.0.bn2.running_var"]
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, run / "model.safetensors")
    with pytest.raises(MedexplainError, match=r"'layer2\.0\.bn2\.running_var' is missing"):
        load(run)
    state = dict(model.state_dict(), extra=torch.zeros(1))
    save_file({k: v.contiguous() for k, v in state.items()}, run / "model.safetensors")
    with pytest.raises(MedexplainError, match=r"unexpected tensor 'extra'"):
        load(run)


def test_corrupt_or_pickled_checkpoints_are_refused(tmp_path: Path) -> None:
    run, model = _run_folder(tmp_path, "bagnet9-light", in_channels=1, num_classes=2)
    torch.save(model.state_dict(), run / "model.safetensors")  # a pickle under the right name
    with pytest.raises(MedexplainError, match=r"model\.safetensors: not a valid safetensors file"):
        load(run)
    (run / "config.json").write_text("{not json")
    with pytest.raises(MedexplainError, match=r"config\.json: not valid JSON"):
        load(run)
    with pytest.raises(MedexplainError, match=r"config\.json: no such file"):
        load(tmp_path / "nowhere")
