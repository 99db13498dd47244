"""Simulator folders: ``simulator.json`` (config, training settings, classifier) + ``simulator.safetensors``.

Nothing is unpickled; a folder whose config does not describe its weights is refused with one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from medexplain.errors import MedexplainError
from medexplain.files import read_json, write_text
from medexplain.models.checkpoint import load_weights, save_weights
from medexplain.simulate.network import Simulator, SimulatorConfig

FORMAT = "medexplain-simulator/1"
CONFIG_FILE = "simulator.json"
WEIGHTS_FILE = "simulator.safetensors"


def save_simulator(simulator: Simulator, folder: str | os.PathLike[str], **info: Any) -> None:
    """Write the weights and ``{"format", "simulator": config, **info}`` (JSON-serialisable ``info``)."""
    folder = Path(folder)
    save_weights(simulator, folder / WEIGHTS_FILE)
    document = {"format": FORMAT, "simulator": simulator.config.to_dict(), **info}
    write_text(folder / CONFIG_FILE, json.dumps(document, indent=2) + "\n")


def read_simulator_config(folder: str | os.PathLike[str]) -> tuple[SimulatorConfig, dict[str, Any]]:
    """The :class:`SimulatorConfig` and the whole JSON document of a simulator folder."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise MedexplainError(f"{path}: no such file (is {folder} a simulator folder?)")
    document = read_json(path)
    if document.get("format") != FORMAT:
        raise MedexplainError(f"{path}: not a simulator config (expected \"format\": \"{FORMAT}\")")
    settings = document.get("simulator")
    if not isinstance(settings, dict):
        raise MedexplainError(f"{path}: \"simulator\" must be an object")
    known = set(SimulatorConfig.__dataclass_fields__)
    unknown = sorted(set(settings) - known)
    missing = sorted({"spatial_dims", "in_channels"} - set(settings))
    if unknown or missing:
        problem = f"unknown key {unknown[0]!r}" if unknown else f"missing key {missing[0]!r}"
        raise MedexplainError(f"{path}: simulator config has {problem}")
    try:
        config = SimulatorConfig(**{**settings, "channels": tuple(settings.get("channels", (16, 32, 64)))})
    except (TypeError, ValueError) as error:
        raise MedexplainError(f"{path}: invalid simulator config ({error})") from None
    return config, document


def load_simulator(folder: str | os.PathLike[str], device: str = "cpu") -> tuple[Simulator, dict[str, Any]]:
    """Rebuild the simulator of ``folder`` (eval mode) and return it with its JSON document."""
    config, document = read_simulator_config(folder)
    simulator = Simulator(config)
    load_weights(simulator, Path(folder) / WEIGHTS_FILE)
    return simulator.to(device).eval(), document
