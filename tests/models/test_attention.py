"""Squeeze-and-excitation and CBAM: MONAI's SE layer as reference, hand-derived gates, identity when gates are 1."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from monai.networks.blocks import ChannelSELayer

from medexplain.cli import main
from medexplain.data.synth import write_fundus
from medexplain.errors import MedexplainError
from medexplain.models import create_model, load
from medexplain.models.attention import CBAM, SpatialAttention, SqueezeExcitation, attention_block


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
def test_squeeze_excitation_equals_monai_channel_se_layer(spatial_dims: int) -> None:
    ours = SqueezeExcitation(8, reduction=4)
    reference = ChannelSELayer(spatial_dims, 8, r=4)
    reference.fc[0].load_state_dict(ours.squeeze.state_dict())
    reference.fc[2].load_state_dict(ours.excite.state_dict())
    x = torch.randn(3, 8, *[5] * spatial_dims)
    torch.testing.assert_close(ours(x), reference(x))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_squeeze_excitation_with_known_weights_scales_channels_analytically(spatial_dims: int) -> None:
    se = SqueezeExcitation(2, reduction=1)
    with torch.no_grad():
        se.squeeze.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        se.squeeze.bias.zero_()
        se.excite.weight.copy_(torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
        se.excite.bias.copy_(torch.tensor([0.0, -1.0]))
    x = torch.empty(1, 2, *[4] * spatial_dims)
    x[:, 0], x[:, 1] = 1.5, -2.0  # channel means z = (1.5, -2); relu(z) = (1.5, 0)
    gates = torch.tensor([1 / (1 + math.exp(-3.0)), 1 / (1 + math.exp(-0.5))])  # sigmoid(2*1.5), sigmoid(1.5-1)
    expected = x * gates.view(1, 2, *[1] * spatial_dims)
    torch.testing.assert_close(se(x), expected)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_cbam_with_known_weights_gives_the_hand_derived_gates(spatial_dims: int) -> None:
    cbam = CBAM(3, spatial_dims, reduction=1, kernel_size=3)
    with torch.no_grad():  # MLP(v) = relu(v): channel gate sigmoid(relu(avg) + relu(max))
        cbam.channel.mlp[0].weight.copy_(torch.eye(3))
        cbam.channel.mlp[2].weight.copy_(torch.eye(3))
        cbam.channel.mlp[0].bias.zero_()
        cbam.channel.mlp[2].bias.zero_()
        cbam.spatial.conv.weight.zero_()  # spatial gate sigmoid(0.5 * mean_c - max_c + 0.25), centre taps only
        centre = (0, slice(None), *[1] * spatial_dims)
        cbam.spatial.conv.weight[centre] = torch.tensor([0.5, -1.0])
        cbam.spatial.conv.bias.fill_(0.25)
    x = torch.randn(2, 3, *[4] * spatial_dims)
    flat = x.flatten(2)
    channel_gate = torch.sigmoid(flat.mean(2).clamp(min=0) + flat.amax(2).clamp(min=0))
    gated = x * channel_gate.view(2, 3, *[1] * spatial_dims)
    spatial_gate = torch.sigmoid(0.5 * gated.mean(1, keepdim=True) - gated.amax(1, keepdim=True) + 0.25)
    torch.testing.assert_close(cbam(x), gated * spatial_gate)


def test_spatial_gate_sees_neighbours_within_its_kernel_only() -> None:
    gate = SpatialAttention(2, kernel_size=7)
    x = torch.zeros(1, 4, 15, 15, requires_grad=True)
    gate.gate(x)[0, 0, 7, 7].backward()
    reached = x.grad.abs().sum(1)[0] > 0
    rows, cols = torch.nonzero(reached, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 10, 4, 10)


def _saturate(model: torch.nn.Module) -> None:
    """Set every attention gate to 1: zero weights, large final biases."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, SqueezeExcitation):
                module.excite.weight.zero_()
                module.excite.bias.fill_(60.0)
            elif isinstance(module, CBAM):
                module.channel.mlp[2].weight.zero_()
                module.channel.mlp[2].bias.fill_(30.0)
                module.spatial.conv.weight.zero_()
                module.spatial.conv.bias.fill_(60.0)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("kind", ["se", "cbam"])
def test_resnet_with_saturated_gates_equals_the_plain_resnet(kind: str, spatial_dims: int) -> None:
    plain = create_model("resnet18", in_channels=1, num_classes=3, spatial_dims=spatial_dims, width=8).eval()
    gated = create_model(
        "resnet18", in_channels=1, num_classes=3, spatial_dims=spatial_dims, width=8, attention=kind
    ).eval()
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(".attention." in name for name in missing)
    x = torch.randn(2, 1, *[32] * spatial_dims)
    assert not torch.allclose(gated(x), plain(x), atol=1e-3)  # random gates do change the output
    _saturate(gated)
    torch.testing.assert_close(gated(x), plain(x), atol=1e-5, rtol=1e-5)


def test_se_resnet18_adds_the_published_parameter_count() -> None:
    plain = create_model("resnet18", in_channels=3, num_classes=1000)
    se = create_model("resnet18", in_channels=3, num_classes=1000, attention="se")
    # two blocks per stage with C = 64, 128, 256, 512 and C/16 hidden units: 2 C^2/16 weights + C/16 + C biases
    extra = sum(2 * (2 * c * c // 16 + c // 16 + c) for c in (64, 128, 256, 512))
    count = sum(p.numel() for p in se.parameters()) - sum(p.numel() for p in plain.parameters())
    assert count == extra
    assert isinstance(se.layer4[1].attention, SqueezeExcitation)
    assert isinstance(plain.layer4[1].attention, torch.nn.Identity)


def test_bad_attention_requests_raise_one_line_errors() -> None:
    with pytest.raises(MedexplainError, match="unknown attention 'eca'; available: se, cbam"):
        attention_block("eca", 8, 2)
    with pytest.raises(MedexplainError, match="has no argument 'attention'"):
        create_model("bagnet9-light", attention="se")
    with pytest.raises(MedexplainError, match="reduction ratio"):
        SqueezeExcitation(8, reduction=0)
    with pytest.raises(MedexplainError, match="odd"):
        CBAM(8, 2, kernel_size=4)


def test_train_cli_attention_builds_reloadable_gated_resnets(tmp_path: Path, capsys) -> None:
    data = write_fundus(tmp_path / "fundus", 24, 48, seed=1, show_progress=False)
    base = ["train", "--model", "resnet18", "--data", str(data), "--epochs", "1", "--no-progress"]
    small = ["--model-args", '{"width": 4, "small_input": true}']
    assert main([*base, "--out", str(tmp_path / "cbam"), *small, "--attention", "cbam"]) == 0
    model, config = load(tmp_path / "cbam")
    assert config["model_args"]["attention"] == "cbam" and isinstance(model.layer2[0].attention, CBAM)
    assert main([*base, "--out", str(tmp_path / "bad"), *small, "--attention", "eca"]) == 2
    assert "unknown attention 'eca'" in capsys.readouterr().err
