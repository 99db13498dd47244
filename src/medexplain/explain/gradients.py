"""Gradient attribution: saliency (Simonyan et al. 2014), input x gradient (Shrikumar et al. 2016), SmoothGrad
(Smilkov et al. 2017); the shared helper that differentiates K targets of a batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.base import create_explainer, explainer_params, register_explainer
from medexplain.explain.budget import add_in_order, budget_field, check_budget, copy_chunks, inputs_per_call
from medexplain.explain.explanation import Explanation
from medexplain.explain.hooks import Hooks
from medexplain.explain.polyphase import polyphase_input_gradient
from medexplain.explain.targets import ResolvedTarget, Target, explicit_indices, resolve_target


def target_gradients(
    model: nn.Module, x: Tensor, target: Target | ResolvedTarget = None, *, create_graph: bool = False
) -> tuple[Tensor, Tensor, ResolvedTarget]:
    """Gradients of each explained score with respect to the input.

    Args:
        model: classifier returning ``(B, C)`` logits.
        x: ``(B, C_in, *spatial)`` input.
        target: what to explain (see :data:`~medexplain.explain.targets.Target`), or an already resolved target.
        create_graph: keep the graph of the gradients (for losses on explanations).

    Returns:
        ``(gradients (B, K, C_in, *spatial), logits (B, C), resolved target)``. One forward pass; K targets cost
        K backward passes through the same graph (samples are independent, so the batch sum is per sample).
    """
    with torch.enable_grad(), Hooks() as hooks:
        inputs = x.detach().requires_grad_(True)
        if not create_graph:
            polyphase_input_gradient(hooks, model, inputs)
        logits = model(inputs)
        resolved = resolve_target(logits, target)
        scores = resolved.scores(logits)
        grads = []
        for k in range(scores.shape[1]):
            last = k == scores.shape[1] - 1
            (grad,) = torch.autograd.grad(
                scores[:, k].sum(), inputs, retain_graph=create_graph or not last, create_graph=create_graph
            )
            grads.append(grad)
    stacked = grads[0].unsqueeze(1) if len(grads) == 1 else torch.stack(grads, dim=1)
    return stacked, logits, resolved


def _indices(resolved: ResolvedTarget) -> Tensor:
    return resolved.indices.detach().cpu()


@register_explainer("saliency", category="gradient")
@dataclass(frozen=True)
class Saliency:
    """Vanilla gradient saliency (Simonyan, Vedaldi, Zisserman, ICLR workshop 2014): ``max_c |d score / d x_c|``.

    Maps ``(B, K, *spatial)``, non-negative.
    """

    name: str = field(default="saliency", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        grads, logits, resolved = target_gradients(model, x, target)
        maps = grads.abs().amax(dim=2)
        return Explanation(maps, _indices(resolved), self.name, explainer_params(self), logits.detach())


@register_explainer("input-x-gradient", category="gradient")
@dataclass(frozen=True)
class InputXGradient:
    """Input times gradient (Shrikumar et al. 2016), summed over input channels: ``sum_c x_c d score / d x_c``.

    Maps ``(B, K, *spatial)``, signed.
    """

    name: str = field(default="input-x-gradient", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        grads, logits, resolved = target_gradients(model, x, target)
        maps = (grads * x.detach().unsqueeze(1)).sum(dim=2)
        return Explanation(maps, _indices(resolved), self.name, explainer_params(self), logits.detach())


@register_explainer("smoothgrad", category="gradient")
@dataclass(frozen=True)
class SmoothGrad:
    """SmoothGrad (Smilkov et al. 2017): the mean of another explainer's maps over noisy copies of the input.

    Noise is Gaussian with standard deviation ``noise_level * (max(x) - min(x))`` per sample; the ``samples``
    noise draws come from ``seed`` and are the same for every sample, so a sample's map does not depend on the
    rest of its batch. Targets that depend on the output are resolved once on the clean input (then ``logits``
    holds its output; explicit class indices need no clean pass). The ``samples x B`` noisy inputs go to the
    wrapped explainer in chunks sized by the memory budget ``max_memory`` (bytes of activations per model call,
    :func:`medexplain.explain.budget.inputs_per_call`; ``None``: as much as one forward + backward of the batch,
    at least 64 MiB); each draw is made when its first chunk needs it and the maps are summed in draw order, so
    the result does not depend on the chunking. Maps ``(B, K, *spatial)``.
    """

    method: str = "saliency"
    samples: int = 25
    noise_level: float = 0.15
    seed: int = 0
    max_memory: int | None = budget_field()
    name: str = field(default="smoothgrad", init=False)

    def __post_init__(self) -> None:
        if self.method == self.name:
            raise MedexplainError("smoothgrad cannot wrap itself")
        if self.samples < 1 or self.noise_level < 0:
            raise MedexplainError("smoothgrad needs samples >= 1 and noise_level >= 0")
        check_budget(self.max_memory)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        inner = create_explainer(self.method)
        x = x.detach()
        b = x.shape[0]
        logits = None
        per_call = inputs_per_call(model, x, self.max_memory)
        indices = explicit_indices(target, b, x.device)
        if indices is None:  # the targets depend on the clean output (predicted class, all classes, callable)
            with torch.no_grad():
                logits = torch.cat([model(part) for part in x.split(per_call)])
            resolved = resolve_target(logits, target)
        else:
            resolved = ResolvedTarget(indices)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        flat = x.reshape(b, -1)
        sigma = (self.noise_level * (flat.amax(dim=1) - flat.amin(dim=1))).view(b, *[1] * (x.ndim - 1))
        draws: dict[int, Tensor] = {}  # the noise of a draw, the same for every sample, made in draw order
        total = None
        for draw, sample in copy_chunks(self.samples, b, per_call, x.device):
            first, last = int(draw[0]), int(draw[-1])
            for d in range(first, last + 1):
                if d not in draws:
                    draws[d] = torch.randn(x.shape[1:], generator=generator, dtype=x.dtype).to(x.device)
            noise = torch.stack([draws.pop(d) if d < last else draws[d] for d in range(first, last + 1)])
            maps = inner(model, x[sample] + sigma[sample] * noise[draw - first], resolved.select(sample)).maps
            if total is None:
                total = maps.new_zeros((b, *maps.shape[1:]))
            add_in_order(total, maps, draw, sample)
        return Explanation(total / self.samples, _indices(resolved), self.name, explainer_params(self), logits)

