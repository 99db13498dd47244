"""Test-only stand-in for torchvision: just enough for reference libraries to import (see ../README.md)."""

from . import models, transforms

__version__ = "0.0.0+medexplain-test-stub"
__all__ = ["models", "transforms"]
