"""Reference libraries (Zennit, Quantus, pytorch-grad-cam) import torchvision at import time.

Importing this module puts the test-only stub ``tests/stubs/torchvision`` first on ``sys.path`` when the real
torchvision is absent, exactly as ``tests/conftest.py`` does. Benchmarks only; the product never imports them.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if importlib.util.find_spec("torchvision") is None:
    sys.path.insert(0, str(ROOT / "tests" / "stubs"))
