"""Optional training features: weight averaging (EMA) is the hand-computed weighted sum of the live weights and
resumes to the bit; a run with test-time flips records the metrics of the flip-averaged model."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from medexplain.data import load_dataset
from medexplain.data.preprocessing import preprocessing_transform
from medexplain.errors import MedexplainError
from medexplain.metrics.classification import accuracy
from medexplain.models import load
from medexplain.models.bagnet import FlipAveraged
from medexplain.models.checkpoint import read_tensors
from medexplain.train import TrainConfig, train
from medexplain.train.averaging import WeightAverage


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).double()


def test_average_equals_the_hand_computed_weighted_sum() -> None:
    net = _net()
    states = [{k: v.clone() for k, v in net.state_dict().items()}]  # w0: the average's starting point
    average = WeightAverage(net, decay=0.5)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        with torch.no_grad():
            for value in net.state_dict().values():
                if value.is_floating_point():
                    value.copy_(torch.randn(value.shape, generator=generator, dtype=value.dtype))
                else:
                    value.add_(7)
        states.append({k: v.clone() for k, v in net.state_dict().items()})
        average.update(net)
    # d_t = min(0.5, t / (t + 9)) = 1/10, 2/11, 3/12; unrolling a_t = d_t a_(t-1) + (1 - d_t) w_t by hand:
    d1, d2, d3 = 1 / 10, 2 / 11, 3 / 12
    coefficients = [d1 * d2 * d3, (1 - d1) * d2 * d3, (1 - d2) * d3, 1 - d3]
    assert sum(coefficients) == pytest.approx(1.0, abs=1e-15)
    averaged = average.average.state_dict()
    for name, value in averaged.items():
        if value.is_floating_point():  # weights, bias and the BatchNorm running statistics
            expected = sum(c * state[name] for c, state in zip(coefficients, states, strict=True))
            torch.testing.assert_close(value, expected, atol=1e-12, rtol=0, msg=name)
        else:  # num_batches_tracked is copied, not averaged
            assert torch.equal(value, states[-1][name])
    # The live model is untouched and the average is a separate, frozen module in eval mode.
    torch.testing.assert_close(net.state_dict()["0.weight"], states[-1]["0.weight"], atol=0, rtol=0)
    assert not average.average.training and not any(p.requires_grad for p in average.average.parameters())
    # Past the warm-up the decay is the one asked for.
    average.updates = 1000
    assert average.current_decay() == 0.5
    with pytest.raises(ValueError, match="decay must lie in"):
        WeightAverage(net, decay=1.0)


def test_ema_run_saves_the_average_and_resumes_to_the_bit(fundus: Path, tmp_path: Path) -> None:
    settings = {"epochs": 2, "batch_size": 8, "lr": 3e-3, "ema_decay": 0.9, "seed": 2}
    config = train(TrainConfig("bagnet9-light", **settings), fundus, tmp_path / "a", progress=False)
    assert config["training"]["ema_decay"] == 0.9

    def interrupt(epoch: int, row: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig("bagnet9-light", **settings), fundus, tmp_path / "b", on_epoch_end=interrupt, progress=False)
    train(TrainConfig("bagnet9-light", **settings), fundus, tmp_path / "b", resume=True, progress=False)
    a, b = read_tensors(tmp_path / "a" / "resume.safetensors"), read_tensors(tmp_path / "b" / "resume.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("average.") for k in a)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=0, rtol=0, msg=name)
    # The checkpoint holds the averaged weights of the best epoch (here the last, as the one chosen is recorded).
    saved = read_tensors(tmp_path / "a" / "model.safetensors")
    live = {k[len("model.") :]: v for k, v in a.items() if k.startswith("model.")}
    averaged = {k[len("average.") :]: v for k, v in a.items() if k.startswith("average.")}
    if config["metrics"]["best_epoch"] == 2:
        torch.testing.assert_close(saved["evidence.weight"], averaged["evidence.weight"], atol=0, rtol=0)
    assert not torch.equal(saved["evidence.weight"], live["evidence.weight"])
    # Without the option nothing changes in the recorded settings (earlier run folders resume unchanged).
    plain = train(
        TrainConfig("bagnet9-light", **{**settings, "ema_decay": None, "epochs": 1}),
        fundus,
        tmp_path / "c",
        progress=False,
    )
    assert not {"ema_decay", "tta_flip_axes", "label_smoothing"} & set(plain["training"])


def test_flip_averaged_run_records_the_metrics_of_the_flip_averaged_model(fundus: Path, tmp_path: Path) -> None:
    settings = {"epochs": 1, "batch_size": 8, "tta_flip_axes": [0, 1], "label_smoothing": 0.1}
    config = train(TrainConfig("sparse-bagnet9-light", **settings), fundus, tmp_path / "run", progress=False)
    assert config["training"]["tta_flip_axes"] == [0, 1] and config["training"]["label_smoothing"] == 0.1
    averaged, config = load(tmp_path / "run")
    assert isinstance(averaged, FlipAveraged) and averaged.axes == (0, 1)  # what explain and evaluate will see
    model = averaged.model
    test = load_dataset(config["data"], split="test", transform=preprocessing_transform(config["preprocessing"]))
    images = torch.stack([test[i].image for i in range(len(test))])
    with torch.no_grad():  # the mean of the logits of the four flipped copies, computed here from the plain model
        logits = sum(model(images.flip(dims) if dims else images) for dims in ([], [2], [3], [2, 3])) / 4
    with torch.no_grad():
        torch.testing.assert_close(averaged(images), logits)
    recorded = config["metrics"]["test"]
    assert accuracy(test.labels, logits.argmax(1)) == pytest.approx(recorded["accuracy"], abs=1e-12)
    with (tmp_path / "run" / "predictions.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    probabilities = torch.tensor([[float(row[f"p_{k}"]) for k in range(5)] for row in rows], dtype=torch.float64)
    torch.testing.assert_close(probabilities, logits.double().softmax(1), atol=1e-5, rtol=0)
    with pytest.raises(MedexplainError, match="has no evidence map to average over flips"):
        train(TrainConfig("resnet18", **settings), fundus, tmp_path / "resnet", progress=False)
    assert not (tmp_path / "resnet" / "model.safetensors").exists()
