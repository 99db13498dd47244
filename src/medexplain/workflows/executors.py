"""How a workflow's batches run: in this process, or on the workers of a cluster (``medexplain.scale``).

A workflow cuts its work into batches and states it as two picklable pieces: ``setup()``, which builds the state
a worker needs (the model, the dataset, the explainers), and ``work(state, batch)``, which computes one batch. An
executor runs ``work`` for every batch on states built by ``setup`` and hands each result to ``on_result`` in
the calling process, where the workflow writes it. The local executor builds the state once and runs the batches
in order; :class:`medexplain.scale.ray_engine.RayExecutor` runs them on a pool of Ray actors. Either way the
batches, and so the numbers, are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

State = TypeVar("State")
Batch = TypeVar("Batch")
Result = TypeVar("Result")


class Executor(Protocol):
    """Runs ``work(state, batch)`` for every batch; ``on_result(number, result)`` is called in this process."""

    def map(
        self,
        setup: Callable[[], Any],
        work: Callable[[Any, Any], Any],
        batches: Sequence[Any],
        on_result: Callable[[int, Any], None],
    ) -> None: ...


class LocalExecutor:
    """Every batch in this process, in order, on one state."""

    def map(
        self,
        setup: Callable[[], State],
        work: Callable[[State, Batch], Result],
        batches: Sequence[Batch],
        on_result: Callable[[int, Result], None],
    ) -> None:
        """Build the state once (only when there is work) and run the batches in order."""
        if not batches:
            return
        state = setup()
        for number, batch in enumerate(batches):
            on_result(number, work(state, batch))
