"""The DICOM VOI window as a pure function, shared by the DICOM reader and the :class:`Window` transform."""

from __future__ import annotations

import torch
from torch import Tensor

from medexplain.errors import MedexplainError


def apply_window(values: Tensor, center: float, width: float, function: str = "linear") -> Tensor:
    """The DICOM VOI window (PS3.3 C.11.2.1.2/.3) with output range [0, 1].

    ``"linear"``: ``clamp((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)`` (``w >= 1``; ``w == 1`` is a step at
    ``c - 0.5``); ``"linear_exact"``: ``clamp((x - c) / w + 0.5, 0, 1)``; ``"sigmoid"``:
    ``1 / (1 + exp(-4 (x - c) / w))``.
    """
    function = function.lower()
    if function == "linear":
        if width < 1:
            raise MedexplainError(f"window width {width} must be >= 1 for the linear VOI function")
        if width == 1:
            return (values > center - 0.5).to(values.dtype)
        return ((values - (center - 0.5)) / (width - 1) + 0.5).clamp(0.0, 1.0)
    if function not in ("linear_exact", "sigmoid"):
        raise MedexplainError(f"unknown window function {function!r}; use 'linear', 'linear_exact' or 'sigmoid'")
    if width <= 0:
        raise MedexplainError(f"window width {width} must be positive")
    if function == "linear_exact":
        return ((values - center) / width + 0.5).clamp(0.0, 1.0)
    return torch.sigmoid(4.0 * (values - center) / width)
