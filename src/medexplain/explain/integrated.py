"""Integrated gradients (Sundararajan, Taly, Yan, ICML 2017) with Captum's quadrature rules."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from medexplain.errors import MedexplainError
from medexplain.explain.base import explainer_params, register_explainer
from medexplain.explain.budget import add_in_order, budget_field, copy_chunks, inputs_per_call
from medexplain.explain.explanation import Explanation
from medexplain.explain.gradients import target_gradients
from medexplain.explain.targets import Target, resolve_target
from medexplain.ndimage import gaussian_blur

Baseline = str | float | Tensor
METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def quadrature(method: str, steps: int) -> tuple[Tensor, Tensor]:
    """Points ``alpha`` in [0, 1] and weights of the path integral, as Captum's ``approximation_parameters``."""
    if steps < 1 or (method == "riemann_trapezoid" and steps < 2):
        raise MedexplainError(f"integrated gradients needs more steps than {steps} for method {method!r}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy(0.5 * (1 + nodes)), torch.from_numpy(0.5 * weights)
    if method == "riemann_trapezoid":
        weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        weights[[0, -1]] /= 2
        return torch.linspace(0, 1, steps, dtype=torch.float64), weights
    offsets = {"riemann_left": (0.0, 1 - 1 / steps), "riemann_right": (1 / steps, 1.0),
               "riemann_middle": (1 / (2 * steps), 1 - 1 / (2 * steps))}
    if method not in offsets:
        raise MedexplainError(f"unknown integration method {method!r}; choose one of {', '.join(METHODS)}")
    start, stop = offsets[method]
    return torch.linspace(start, stop, steps, dtype=torch.float64), torch.full((steps,), 1 / steps, dtype=torch.float64)


def make_baseline(x: Tensor, baseline: Baseline, blur_sigma: float) -> Tensor:
    """The reference input: ``"zeros"``, a constant, ``"blur"`` (Gaussian blur of x), or a tensor broadcast to x."""
    if isinstance(baseline, Tensor):
        try:
            return baseline.to(x).expand_as(x)
        except RuntimeError:
            raise MedexplainError(
                f"baseline of shape {tuple(baseline.shape)} does not broadcast to input {tuple(x.shape)}"
            ) from None
    if baseline == "zeros":
        return torch.zeros_like(x)
    if baseline == "blur":
        return gaussian_blur(x, blur_sigma)
    if isinstance(baseline, int | float) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    raise MedexplainError(f"unknown baseline {baseline!r}; use 'zeros', 'blur', a number or a tensor")


@register_explainer("integrated-gradients", category="gradient")
@dataclass(frozen=True)
class IntegratedGradients:
    """Integrated gradients ``(x - x') * integral_0^1 grad f(x' + a (x - x')) da``, summed over input channels.

    ``steps`` points of ``method`` (Gauss-Legendre by default, as Captum). The ``steps x B`` path points go
    through the model in chunks sized by the memory budget ``max_memory`` (bytes of activations per model call,
    :func:`medexplain.explain.budget.inputs_per_call`; ``None``: as much as one forward + backward of the batch,
    at least 64 MiB), and are summed in a fixed order, so the maps do not depend on the chunking.
    ``extras["completeness_delta"]`` ``(B, K)`` is ``sum(attribution) - (f(x) - f(x'))``. Maps ``(B, K,
    *spatial)``, signed.
    """

    steps: int = 50
    baseline: Baseline = "zeros"
    method: str = "gausslegendre"
    blur_sigma: float = 5.0
    max_memory: int | None = budget_field()
    name: str = field(default="integrated-gradients", init=False)

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> Explanation:
        x = x.detach()
        alphas, weights = quadrature(self.method, self.steps)
        alphas, weights = alphas.to(x), weights.to(x)
        reference = make_baseline(x, self.baseline, self.blur_sigma)
        b = x.shape[0]
        per_call = inputs_per_call(model, x, self.max_memory)
        with torch.no_grad():
            ends = torch.cat([x, reference])
            logits, baseline_logits = torch.cat([model(part) for part in ends.split(per_call)]).split(b)
            resolved = resolve_target(logits, target)
            baseline_scores = resolved.scores(baseline_logits)
        delta = x - reference
        total = None
        shape = (-1, *[1] * (x.ndim - 1))
        for step, sample in copy_chunks(self.steps, b, per_call, x.device):
            path = reference[sample] + alphas[step].view(shape) * delta[sample]
            grads, _, _ = target_gradients(model, path, resolved.select(sample))
            weighted = grads * weights[step].view(-1, 1, *[1] * (x.ndim - 1))
            if total is None:
                total = weighted.new_zeros((b, *weighted.shape[1:]))
            add_in_order(total, weighted, step, sample)
        attributions = total * delta.unsqueeze(1)
        maps = attributions.sum(dim=2)
        delta_completeness = maps.flatten(2).sum(dim=2) - (resolved.scores(logits) - baseline_scores)
        return Explanation(
            maps, resolved.indices.cpu(), self.name, explainer_params(self), logits,
            {"completeness_delta": delta_completeness},
        )

