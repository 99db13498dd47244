"""Contract tests over every registry: names, documentation and errors hold for every registered item.

Method-specific contracts (explainers leave no hooks, models' evidence maps pool to the logits, ...) live in
the tests of each subpackage and are parametrised over the same registries.
"""

from __future__ import annotations

import re

import pytest

from medexplain import explain, metrics, models
from medexplain.errors import MedexplainError
from medexplain.metrics.registry import CATEGORIES

REGISTRIES = {"model": models.MODELS, "explainer": explain.EXPLAINERS, "metric": metrics.METRICS}
ENTRIES = [(kind, entry.name) for kind, registry in REGISTRIES.items() for entry in registry]
NAME = re.compile(r"^[a-z][a-z0-9+]*(-[a-z0-9+]+)*$")


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
def test_registered_items_are_named_and_documented(kind: str, name: str) -> None:
    obj = REGISTRIES[kind].get(name)
    assert NAME.match(name), f"{kind} {name!r}: names are lower-case words joined by '-'"
    assert (obj.__doc__ or "").strip(), f"{kind} {name!r} has no docstring"


@pytest.mark.parametrize("name", metrics.available())
def test_metric_metadata_is_complete(name: str) -> None:
    info = metrics.metric_info(name)
    assert info.category in CATEGORIES
    assert isinstance(info.higher_is_better, bool)


@pytest.mark.parametrize(
    ("factory", "kind"),
    [(models.create_model, "model"), (explain.create_explainer, "explainer"), (metrics.get_metric, "metric")],
)
def test_unknown_names_list_the_available_ones(factory, kind: str) -> None:
    with pytest.raises(MedexplainError, match=rf"unknown {kind} 'no-such-thing'.*available: "):
        factory("no-such-thing")


@pytest.mark.parametrize("name", explain.available())
def test_explainers_reject_unknown_parameters(name: str) -> None:
    with pytest.raises(MedexplainError, match=rf"explainer {re.escape(repr(name))} has no parameter 'bogus'"):
        explain.create_explainer(name, bogus=1)


@pytest.mark.parametrize("name", models.available())
def test_models_reject_unknown_arguments(name: str) -> None:
    with pytest.raises(MedexplainError, match=rf"model {re.escape(repr(name))} has no argument 'bogus'"):
        models.create_model(name, in_channels=1, num_classes=2, bogus=1)
