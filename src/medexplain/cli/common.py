"""Parsing shared by several commands: targets, the engine options, JSON arguments."""

from __future__ import annotations

import json
from typing import Any

from medexplain.errors import MedexplainError


def parse_target(text: str) -> str | int:
    """``"predicted"``, ``"all"`` or a class index."""
    if text in ("predicted", "all"):
        return text
    try:
        return int(text)
    except ValueError:
        raise MedexplainError(f"--target: expected 'predicted', 'all' or a class index, got {text!r}") from None


def engine_options(engine: str, address: str | None, workers: int | None, device: str) -> Any:
    """The executor that ``--engine``, ``--address`` and ``--workers`` ask for."""
    from medexplain.scale import make_executor

    return make_executor(engine, address=address, workers=workers, device=device)


def json_object(text: str | None, flag: str) -> dict:
    """The JSON object given to ``flag`` (``{}`` when not given)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise MedexplainError(f"{flag}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise MedexplainError(f"{flag}: must be a JSON object, got {text!r}")
    return value
