"""Memory budgets and incremental evaluation: chunk sizes from measured activations, results independent of the
chunking (integrated gradients, SmoothGrad, occlusion; 2D and 3D), cone-restricted layers equal to full ones."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from tests.explain.models import CONV, MAXPOOL, ResNetLike, randomize_batchnorm
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain import create_explainer
from medexplain.explain.budget import MINIMUM_DEFAULT_BUDGET, activation_bytes, inputs_per_call
from medexplain.explain.hooks import hook_count
from medexplain.explain.incremental import cone_evaluation


def test_activation_bytes_count_what_autograd_keeps_per_input() -> None:
    """conv -> ReLU -> flatten -> linear keeps the input (for the conv) and the ReLU output (for the ReLU and,
    as a view, the linear layer); the weights are not counted."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 12, 2))
    x = torch.randn(5, 1, 10, 12)
    assert activation_bytes(model, x[:1]) == (1 + 4) * 10 * 12 * 4
    assert activation_bytes(model.double(), x[:1].double()) == (1 + 4) * 10 * 12 * 8


def test_measuring_changes_no_state_of_the_model() -> None:
    """BatchNorm statistics in training mode and the random state (dropout) come back as they were."""
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Dropout(0.5), nn.Flatten()).train()
    buffers = [b.clone() for b in model.buffers()]
    x = torch.randn(1, 1, 7, 7)
    state = torch.random.get_rng_state()
    activation_bytes(model, x)
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))
    assert torch.equal(state, torch.random.get_rng_state())
    assert model.training and hook_count(model) == 0


def test_measuring_frees_its_activations_without_the_garbage_collector() -> None:
    """The measuring pass's saved outputs (here the sigmoid's) are freed when it ends, not by a later garbage
    collection: at 3D scale that is one more forward pass's worth of memory."""

    class SavesItsOutput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x: Tensor) -> Tensor:
            y = torch.sigmoid(self.conv(x))  # sigmoid's backward needs its output
            self.output = weakref.ref(y)
            return y.mean((2, 3))

    model = SavesItsOutput()
    gc.disable()
    try:
        activation_bytes(model, torch.randn(1, 1, 9, 9))
        assert model.output() is None
    finally:
        gc.enable()


def test_inputs_per_call_follows_the_budget() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 12, 2))
    x = torch.randn(3, 1, 10, 12)
    per_input = activation_bytes(model, x[:1])
    assert inputs_per_call(model, x, 10 * per_input) == 10
    assert inputs_per_call(model, x, 10 * per_input - 1) == 9
    assert inputs_per_call(model, x, 1) == 1  # at least one input, whatever the budget
    assert inputs_per_call(model, x) == MINIMUM_DEFAULT_BUDGET // per_input  # small inputs: 64 MiB
    wide = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU())
    big = torch.randn(3, 1, 300, 300)  # one forward + backward of the batch exceeds 64 MiB
    assert activation_bytes(wide, big[:1]) * 3 > MINIMUM_DEFAULT_BUDGET
    assert inputs_per_call(wide, big) == 3
    for bad in (0, -5, True):
        with pytest.raises(MedexplainError, match="`max_memory` must be a positive number of bytes"):
            inputs_per_call(model, x, bad)


def _model(dims: int) -> nn.Module:
    return ResNetLike(dims).double()


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("integrated-gradients", {"steps": 5}),
        ("smoothgrad", {"samples": 5, "noise_level": 0.2}),
        ("occlusion", {"window": 3, "stride": 2, "fill": 0.3}),
    ],
)
def test_results_do_not_depend_on_the_chunking(dims: int, name: str, params: dict) -> None:
    """One input per model call, a few, and everything at once give the same maps (3 samples, so chunks cut
    through the copies of one step, draw or window)."""
    model = _model(dims)
    x = torch.randn(3, 2, *[7] * dims, dtype=torch.float64)
    target = torch.tensor([0, 2, 1])
    per_input = activation_bytes(model, x[:1])
    maps = [
        create_explainer(name, **params, max_memory=budget)(model, x, target).maps
        for budget in (1, 4 * per_input, 10**12)
    ]
    for other in maps[1:]:
        torch.testing.assert_close(other, maps[0], rtol=1e-12, atol=1e-13)
    assert hook_count(model) == 0


def test_smoothgrad_draws_are_the_same_whatever_the_chunking() -> None:
    """The noise of draw k does not depend on how many draws a chunk holds: the map of a linear model (whose
    saliency does not depend on the noise) is unchanged, and input x gradient averages the noisy inputs."""
    weight = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2, bias=False)).double()
    model[1].weight.data = weight.view(2, 16)
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    one = create_explainer("smoothgrad", method="input-x-gradient", samples=7, max_memory=1)(model, x, 1).maps
    all_ = create_explainer("smoothgrad", method="input-x-gradient", samples=7)(model, x, 1).maps
    torch.testing.assert_close(one, all_, rtol=0, atol=0)
    generator = torch.Generator().manual_seed(0)
    noise = torch.stack([torch.randn((1, 4, 4), generator=generator, dtype=torch.float64) for _ in range(7)])
    sigma = 0.15 * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
    noisy_mean = x + sigma.view(2, 1, 1, 1) * noise.mean(0)
    torch.testing.assert_close(one[:, 0], (noisy_mean * weight[1])[:, 0])


class _Strided(nn.Module):
    """Strided, padded and dilated convolutions, a padded max pooling, in-place operations on a convolution's
    output and a functional residual addition: every case of the cone arithmetic."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        conv = CONV[dims]
        self.stem = conv(2, 4, 5, stride=2, padding=2)
        self.relu = nn.ReLU(inplace=True)
        self.pool = MAXPOOL[dims](3, stride=2, padding=1)
        self.dilated = conv(4, 4, 3, padding=2, dilation=2)
        self.valid = conv(4, 5, 2, stride=1)
        self.head = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.pool(self.relu(self.stem(x).add_(0.25)))  # in place on a recorded output
        y = torch.relu(self.dilated(y)) + y
        return self.head(self.valid(y).flatten(2).mean(2))


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_cone_evaluation_equals_the_full_forward_pass(dims: int) -> None:
    """Copies changed in small boxes (one unchanged, one changed everywhere, samples in any order): the outputs
    equal the model's own, and the stem really ran on its cone only."""
    torch.manual_seed(dims)
    model = _Strided(dims).double().eval()
    size = {1: 40, 2: 24, 3: 14}[dims]
    clean = torch.randn(2, 2, *[size] * dims, dtype=torch.float64)
    samples = torch.tensor([1, 0, 0, 1, 1])
    copies = clean[samples].clone()
    for i, corner in enumerate([0, 3, size - 4]):
        copies[(i, slice(None), *[slice(corner, corner + 3)] * dims)] = 0.5
    copies[4] = torch.randn_like(copies[4])  # index 3 stays clean
    with torch.no_grad(), cone_evaluation(model, clean) as (clean_output, evaluate):
        torch.testing.assert_close(clean_output, model(clean), rtol=0, atol=0)
        boxes = evaluate(copies[:4], samples[:4])  # small changes: the stem runs on its cone only
        partial = evaluate.records[(id(model.stem), 0)].full_runs == 0
        output = evaluate(copies, samples)  # one copy changed everywhere: the stem runs on the whole input
        aligned = evaluate(copies[:4], torch.tensor([0, 1, 0, 1]))  # copy-major over the batch: broadcast path
    assert partial
    assert hook_count(model) == 0
    with torch.no_grad():
        torch.testing.assert_close(boxes, model(copies[:4]), rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(output, model(copies), rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(aligned, model(copies[:4]), rtol=1e-12, atol=1e-13)


def test_cone_evaluation_counts_the_output_positions_it_computed() -> None:
    """A 3x3 convolution (padding 1) on 10 x 10: a change in the 2 x 2 corner reaches the 3 x 3 corner of the output
    (9 of 100 positions); a change everywhere runs the layer in full (100), also when ``full_share`` lets it crop."""
    conv = nn.Conv2d(1, 2, 3, padding=1)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(200, 1)).double().eval()
    clean = torch.randn(1, 1, 10, 10, dtype=torch.float64)
    corner = clean.clone()
    corner[..., :2, :2] = 0
    for share in (0.5, 1.0):
        with torch.no_grad(), cone_evaluation(model, clean, full_share=share) as (_, evaluate):
            evaluate(torch.cat([corner, corner]), torch.tensor([0, 0]))
            assert evaluate.positions[conv] == [2 * 9, 2 * 100]
            output = evaluate(torch.cat([corner, clean + 1]), torch.tensor([0, 0]))
            assert evaluate.positions[conv] == [2 * 9 + 2 * 100, 4 * 100]
            torch.testing.assert_close(output, model(torch.cat([corner, clean + 1])), rtol=1e-12, atol=1e-13)
        assert list(evaluate.positions) == [conv]


def test_cone_evaluation_is_off_in_training_mode() -> None:
    model = randomize_batchnorm(ResNetLike(2)).double().train()
    clean = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad(), cone_evaluation(model, clean) as (_, evaluate):
        assert not evaluate.records
    model.eval()


@pytest.mark.parametrize("dims", [2, 3])
def test_occlusion_equals_captum_on_a_strided_network(dims: int) -> None:
    """Overlapping windows, a non-zero fill, and the cone evaluation in every layer kind: Captum's maps (which
    Captum returns in float32 when windows overlap)."""
    from captum.attr import Occlusion as CaptumOcclusion

    model = _Strided(dims).double().eval()
    x = torch.randn(2, 2, *[12] * dims, dtype=torch.float64)
    target = torch.tensor([2, 0])
    ours = create_explainer("occlusion", window=4, stride=2, fill=0.2)(model, x, target).maps[:, 0]
    shape = (2, *[4] * dims)
    reference = CaptumOcclusion(model).attribute(
        x, sliding_window_shapes=shape, strides=(2, *[2] * dims), baselines=torch.full_like(x, 0.2), target=target
    ).sum(1) / 2  # Captum spreads each window's drop over its channels as well
    torch.testing.assert_close(ours.float(), reference, rtol=1e-6, atol=1e-7)
