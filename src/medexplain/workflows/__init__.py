"""Dataset-level runs that compose data, models, explain and metrics, and own the on-disk formats.

- :func:`explain_run` / :func:`explain_dataset`: explain a dataset into an explanations folder
  (:mod:`~medexplain.workflows.explanations`);
- :func:`evaluate_run` / :func:`evaluate_explanations`: score stored maps into a scores folder
  (:mod:`~medexplain.workflows.scores`);
- :func:`run_demo`: the whole toolkit end to end.

Each is resumable and shows progress; the command line, the demo and the Ray engine (:mod:`medexplain.scale`)
call these functions, and an :class:`~medexplain.workflows.executors.Executor` decides where the batches run.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "DemoModel": "demo",
    "DemoSettings": "demo",
    "run_demo": "demo",
    "Evaluation": "evaluate",
    "EvaluationRun": "evaluate",
    "evaluate_explanations": "evaluate",
    "evaluate_run": "evaluate",
    "Executor": "executors",
    "LocalExecutor": "executors",
    "build_explainers": "explain",
    "explain_dataset": "explain",
    "explain_run": "explain",
    "StoredExplanations": "explanations",
    "load_explanations": "explanations",
}


def __getattr__(name: str) -> Any:
    # Submodules are imported on first use: the command line reads the demo's defaults without loading torch.
    if name in _HOMES:
        return getattr(importlib.import_module(f"medexplain.workflows.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DemoModel",
    "DemoSettings",
    "Evaluation",
    "EvaluationRun",
    "Executor",
    "LocalExecutor",
    "StoredExplanations",
    "build_explainers",
    "evaluate_explanations",
    "evaluate_run",
    "explain_dataset",
    "explain_run",
    "load_explanations",
    "run_demo",
]
