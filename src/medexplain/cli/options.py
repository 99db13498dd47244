"""Option values the CLI parses itself."""

from __future__ import annotations

import json
from typing import Any

from medexplain.errors import MedexplainError


def json_object(text: str | None, flag: str) -> dict[str, Any]:
    """The JSON object given to ``flag`` (``{}`` for none); anything else is a one-line error naming the flag."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise MedexplainError(f"{flag}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise MedexplainError(f"{flag}: must be a JSON object, got {text!r}")
    return value
