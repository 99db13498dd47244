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


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}

MAX_MEMORY_HELP = (
    "Bytes of activations per model call for methods that batch perturbations, path points or noisy copies "
    "(e.g. 512M, 4G; default: one forward + backward of the batch, at least 64M). Results do not depend on it."
)


def parse_bytes(text: str | None, flag: str) -> int | None:
    """A size such as ``"4G"``, ``"512M"``, ``"1.5G"`` or ``"100000"`` (binary units) in bytes; ``None`` stays."""
    if text is None:
        return None
    cleaned = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = cleaned[-1:] if cleaned[-1:] in _UNITS and cleaned[-1:] else ""
    try:
        value = float(cleaned[: len(cleaned) - len(unit)]) * _UNITS[unit]
    except ValueError:
        raise MedexplainError(f"{flag}: expected a size such as 512M or 4G, got {text!r}") from None
    if not value >= 1:
        raise MedexplainError(f"{flag}: must be at least one byte, got {text!r}")
    return int(value)


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
