"""The metric registry: pure, batched functions returning per-sample scores ``(B,)``, with their metadata.

The metadata is the one source of what a metric needs and does: the inputs it takes (a ground-truth mask, the
model, the explainer to re-run), whether it is the area under a perturbation curve (and which), how many model
evaluations per image it costs, its parameter defaults and the direction of its score. Callers (the evaluation
workflow, the CLI's listing, the benchmarks' cost floors) read it here instead of inspecting functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from medexplain.errors import MedexplainError
from medexplain.registry import Registry

CATEGORIES = ("localisation", "faithfulness", "robustness", "complexity", "sanity", "classification")
NEEDS = ("mask", "model", "explainer")
"""What a metric can need besides the maps: a ground-truth ``mask``; the ``model`` (it then also takes the
input ``x`` and the ``target``); the ``explainer`` that made the maps, to run it again (implies the model)."""


@dataclass(frozen=True)
class Curve:
    """A metric that is the area under a perturbation curve: ``function(model, x, maps, target, mode=mode,
    **params) -> (B, steps + 1)``, whose :func:`~medexplain.metrics.faithfulness.curve_area` is the score."""

    mode: str
    function: Callable[..., Tensor]


@dataclass(frozen=True)
class MetricInfo:
    """What a metric measures, needs and costs.

    Attributes:
        category: one of :data:`CATEGORIES`.
        higher_is_better: direction of the score.
        needs: a subset of :data:`NEEDS`.
        defaults: the metric's parameters and their defaults (its keyword arguments other than the inputs).
        curve: the perturbation curve behind the score, for curve metrics.
        passes: model evaluations per image (forward passes, or explainer calls for metrics that re-run the
            explainer) from the parameters (defaults filled in); ``None`` for model-free metrics.
        description: one line for listings (the first paragraph of the function's docstring).
    """

    category: str
    higher_is_better: bool
    needs: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    curve: Curve | None = None
    passes: Callable[[Mapping[str, Any]], int] | None = None
    description: str = ""

    @property
    def needs_mask(self) -> bool:
        return "mask" in self.needs

    @property
    def needs_model(self) -> bool:
        return "model" in self.needs

    @property
    def needs_explainer(self) -> bool:
        return "explainer" in self.needs

    @property
    def inputs(self) -> tuple[str, ...]:
        """The keyword arguments, besides the maps, that the caller supplies from its data."""
        names = ("mask",) if self.needs_mask else ()
        names += ("model", "x", "target") if self.needs_model else ()
        return names + (("explainer",) if self.needs_explainer else ())


METRICS: Registry[Callable[..., Tensor]] = Registry("metric")


def register_metric(
    name: str,
    *,
    category: str,
    higher_is_better: bool,
    needs: tuple[str, ...] = (),
    curve: Curve | None = None,
    passes: Callable[[Mapping[str, Any]], int] | None = None,
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator adding a metric function ``metric(maps, *, <inputs>, **params) -> (B,)`` to the registry.

    Its :class:`MetricInfo` takes the parameter defaults from the function's keyword-only defaults, so they are
    written once, in the signature.
    """
    if category not in CATEGORIES:
        raise ValueError(f"metric {name!r}: category must be one of {CATEGORIES}, got {category!r}")
    unknown = sorted(set(needs) - set(NEEDS))
    if unknown:
        raise ValueError(f"metric {name!r}: unknown need {unknown[0]!r}; known: {NEEDS}")
    needed = frozenset(needs) | ({"model"} if "explainer" in needs else set())
    if (curve is not None or passes is not None) != ("model" in needed):
        raise ValueError(f"metric {name!r}: curve and passes describe model-bound metrics only")

    inputs = set(MetricInfo(category, higher_is_better, needed).inputs)

    def add(function: Callable[..., Tensor]) -> Callable[..., Tensor]:
        defaults = {k: v for k, v in (function.__kwdefaults__ or {}).items() if k not in inputs}
        description = " ".join((function.__doc__ or "").strip().split("\n\n")[0].split())
        info = MetricInfo(category, higher_is_better, needed, defaults, curve, passes, description)
        METRICS.add(name, function, info=info)
        return function

    return add


def get_metric(name: str) -> Callable[..., Tensor]:
    """The metric function registered as ``name``."""
    return METRICS.get(name)


def metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of metric ``name``."""
    return METRICS.entry(name).metadata["info"]


def available(category: str | None = None) -> list[str]:
    """Names of the registered metrics, optionally of one category."""
    return [e.name for e in METRICS if category is None or e.metadata["info"].category == category]


def forward_passes(metric: str, *, with_maps: bool = True, **params: Any) -> int:
    """Model evaluations per image of ``metric`` with ``params`` (its keyword arguments; defaults filled in).

    ``with_maps=False`` also counts the clean explanation that metrics re-running the explainer compute when
    given no maps; ``model-randomisation`` needs ``layers`` (a count, or the list of layer names). Region
    perturbation needs fewer when the image has fewer than ``regions`` patches.
    """
    info = metric_info(metric)
    if info.passes is None:
        model_bound = ", ".join(e.name for e in METRICS if e.metadata["info"].passes is not None)
        raise MedexplainError(f"{metric!r} is not a model-bound metric; model-bound: {model_bound}")
    clean = 0 if with_maps or not info.needs_explainer else 1
    return info.passes({**info.defaults, **params}) + clean
