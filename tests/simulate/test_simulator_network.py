"""Conditional convolution, the simulator network, its losses and the frozen classifier."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medexplain.errors import MedexplainError
from medexplain.simulate import (
    CondConv,
    Simulator,
    SimulatorConfig,
    compose,
    disease_logit,
    displacement_loss,
    frozen,
    hinge_loss,
    smoothness_loss,
    warp,
)
from medexplain.simulate.training import TrainingConfig, simulator_loss

CONVOLUTIONS = {2: F.conv2d, 3: F.conv3d}


@pytest.mark.parametrize("dims", [2, 3])
def test_condconv_is_the_routed_mixture_of_expert_kernels(dims: int) -> None:
    """Reference: mix the kernels by hand with sigmoid(A d + a) and run a plain convolution per sample."""
    layer = CondConv(3, 5, 3, spatial_dims=dims, num_experts=4, stride=2).double()
    x = torch.randn(3, 3, *([9] * dims), dtype=torch.float64)
    direction = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    out = layer(x, direction.view(3, 1))
    for i, d in enumerate(direction.tolist()):
        routing = torch.sigmoid(layer.routing.weight[:, 0] * d + layer.routing.bias)
        weight = sum(r * w for r, w in zip(routing, layer.weight, strict=True))
        bias = sum(r * b for r, b in zip(routing, layer.bias, strict=True))
        expected = CONVOLUTIONS[dims](x[i : i + 1], weight, bias, stride=2, padding=1)
        torch.testing.assert_close(out[i : i + 1], expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dims", [2, 3])
def test_condconv_really_depends_on_the_direction(dims: int) -> None:
    layer = CondConv(2, 4, 3, spatial_dims=dims)
    x = torch.randn(1, 2, *([8] * dims))
    inject, remove = layer(x, torch.ones(1, 1)), layer(x, -torch.ones(1, 1))
    assert (inject - remove).abs().mean() > 1e-2 * inject.abs().mean()


@pytest.mark.parametrize("dims", [2, 3])
def test_untrained_simulator_is_the_identity_and_its_fields_are_inverse(dims: int) -> None:
    simulator = Simulator(SimulatorConfig(spatial_dims=dims, in_channels=1, channels=(4, 8, 8)))
    image = torch.rand(2, 1, *([12] * dims))
    simulation = simulator.simulate(image, [1, -1])
    torch.testing.assert_close(simulation.image, image, rtol=0, atol=1e-5)
    torch.testing.assert_close(simulation.jacobian(), torch.ones(2, 1, *([12] * dims)))
    # a non-trivial head: the deformation psi and the sampling field phi must be inverse maps
    with torch.no_grad():
        simulator.head.bias.normal_(0, 0.3)
        simulator.head.weight.normal_(0, 0.02)
    simulation = simulator.simulate(image, [1, -1])
    assert simulation.velocity.abs().max() > 0.1
    torch.testing.assert_close(simulation.image, warp(image, simulation.displacement))
    residual = compose(simulation.deformation, simulation.displacement)[(..., *([slice(3, -3)] * dims))]
    assert residual.abs().max() < 0.05 * simulation.velocity.abs().max()


def test_simulator_rejects_bad_directions_and_images() -> None:
    simulator = Simulator(SimulatorConfig(spatial_dims=2, in_channels=1, channels=(4, 8)))
    with pytest.raises(MedexplainError, match="direction must be"):
        simulator.simulate(torch.rand(2, 1, 8, 8), [1, 0])
    with pytest.raises(MedexplainError, match="does not fit"):
        simulator.simulate(torch.rand(2, 1, 8, 8, 8), 1)


def test_disease_logit_and_hinge_by_hand() -> None:
    outputs = torch.tensor([[1.0, 3.0], [2.0, -1.0]])
    torch.testing.assert_close(disease_logit(outputs), torch.tensor([2.0, -3.0]))
    three = torch.tensor([[0.0, 1.0, 2.0]])
    expected = 1.0 - torch.logsumexp(torch.tensor([0.0, 2.0]), 0)
    torch.testing.assert_close(disease_logit(three), expected.view(1))
    torch.testing.assert_close(disease_logit(torch.tensor([[0.7]])), torch.tensor([0.7]))
    original, simulated = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([3.0, -1.0, 0.5])
    direction = torch.tensor([1.0, 1.0, -1.0])
    # (0-3)*1+2 -> 0 ; (0+1)*1+2 -> 3 ; (1-0.5)*-1+2 -> 1.5
    torch.testing.assert_close(hinge_loss(original, simulated, direction, 2.0), torch.tensor(4.5 / 3))


def test_smoothness_is_the_mean_absolute_finite_difference() -> None:
    field = torch.zeros(1, 2, 4, 5)
    field[0, 0] = torch.arange(5.0)  # slope 1 along the last axis, 0 along the first
    torch.testing.assert_close(smoothness_loss(field), torch.tensor(0.5))  # mean over both channels


@pytest.mark.parametrize("dims", [2, 3])
def test_displacement_penalty_is_the_mean_length_of_the_displacements(dims: int) -> None:
    field = torch.zeros(1, dims, *([2] * dims))
    field[(0, slice(None), *([0] * dims))] = torch.tensor([3.0, 4.0, 12.0][:dims])  # length 5 (2D) or 13 (3D)
    field[(0, 0, *([1] * dims))] = -1.0  # length 1
    expected = (5.0 if dims == 2 else 13.0) + 1.0
    torch.testing.assert_close(displacement_loss(field), torch.tensor(expected / 2**dims))
    # in the objective: weight x the penalty on the forward (sampling) field, and nothing when the weight is 0
    simulator = Simulator(SimulatorConfig(spatial_dims=dims, in_channels=1, channels=(4, 8)))
    with torch.no_grad():
        simulator.head.bias.normal_(0, 0.3)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(6**dims, 2))
    image, direction = torch.rand(2, 1, *([6] * dims)), torch.tensor([1.0, -1.0])
    _, parts = simulator_loss(simulator, classifier, image, direction, TrainingConfig(displacement_weight=2.5))
    with torch.no_grad():
        forward = simulator.simulate(image, direction).displacement
    assert parts["displacement"] == pytest.approx(2.5 * float(forward.norm(dim=1).mean()), rel=1e-5)
    assert float(forward.norm(dim=1).mean()) > 0.05
    assert "displacement" not in simulator_loss(simulator, classifier, image, direction, TrainingConfig())[1]
    with pytest.raises(MedexplainError, match="invalid simulator training settings"):
        TrainingConfig(displacement_weight=-1.0)


@pytest.mark.parametrize("dims", [2, 3])
def test_gradients_reach_the_simulator_but_not_the_frozen_classifier(dims: int) -> None:
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(6**dims, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    classifier[3].weight.requires_grad_(False)  # a user's own choice that must survive
    classifier.train()
    simulator = Simulator(SimulatorConfig(spatial_dims=dims, in_channels=1, channels=(4, 8)))
    image = torch.rand(4, 1, *([6] * dims))
    with frozen(classifier):
        assert not classifier.training
        loss, parts = simulator_loss(simulator, classifier, image, torch.tensor([1.0, -1, 1, -1]), TrainingConfig())
        loss.backward()
    assert parts["hinge"] > 0
    assert simulator.head.weight.grad is not None and simulator.head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in classifier.parameters())
    assert [p.requires_grad for p in classifier.parameters()] == [True, True, False, True]
    assert classifier.training and classifier[2].training


def test_frozen_restores_flags_after_an_exception() -> None:
    model = nn.Linear(2, 2).eval()
    with pytest.raises(RuntimeError), frozen(model):
        raise RuntimeError("boom")
    assert all(p.requires_grad for p in model.parameters()) and not model.training
