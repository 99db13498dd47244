"""A user's own trained model, described by a model card: architecture and weights, or a TorchScript archive, with
the preprocessing, classes and output type it was trained with.

```
{"architecture": "monai:DenseNet121",          # or "medexplain:resnet18", or "factory:nets.py:build"
 "arguments": {"spatial_dims": 2, "in_channels": 1, "out_channels": 3},
 "weights": "model.pth",                       # torch.save(model.state_dict(), ...) or .safetensors
 "torchscript": "model.pt",                    # instead of architecture + weights: torch.jit.save(...)
 "in_channels": 1,                             # when the arguments do not say it (TorchScript, factories)
 "preprocessing": {"size": 128, "intensity": {"mean": [0.3], "std": [0.2]}},
 "classes": ["normal", "benign", "malignant"],
 "output": "softmax",                          # or "sigmoid" (multi-label)
 "cam_layer": "features.denseblock4",          # optional: the layer of the CAM family
 "method_params": {"occlusion": {"window": 16}}} # optional: hyperparameters per method (flags override them)
```

Paths are relative to the card's folder. Weights are never unpickled: ``torch.load(..., weights_only=True)``
or safetensors; a ``module.`` prefix (DataParallel, DistributedDataParallel) is removed; a state dict of another
architecture names its first missing, unexpected or reshaped tensor. A factory file is imported only because the
card names it.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import pickle
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medexplain.errors import MedexplainError
from medexplain.files import read_json
from medexplain.models.checkpoint import load_state, read_tensors
from medexplain.models.registry import MODELS, create_model

CARD_FORMAT = "medexplain-model-card/1"
KINDS = ("medexplain", "monai", "factory")
OUTPUTS = ("softmax", "sigmoid")
KEYS = ("format", "architecture", "arguments", "weights", "torchscript", "in_channels", "preprocessing", "classes",
        "output", "cam_layer", "method_params")  # fmt: skip


def is_card(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` names a model card (a ``.json`` file) rather than a run folder."""
    return Path(source).suffix.lower() == ".json"


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The card at ``path`` as a run-like config: ``model``, ``model_args``, ``preprocessing``, ``class_names``,
    ``task`` (``"ce"`` for softmax, ``"bce"`` for sigmoid), plus the card's own keys; checked, not yet loaded."""
    path = Path(path)
    card = read_json(path)
    unknown = sorted(set(card) - set(KEYS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise MedexplainError(f"{path}: unknown model card key {unknown[0]!r}{hint}; known: {', '.join(KEYS)}")
    if bool(card.get("architecture")) == bool(card.get("torchscript")):
        raise MedexplainError(f"{path}: give either an architecture (with weights) or a torchscript archive")
    if card.get("architecture") and not card.get("weights"):
        raise MedexplainError(f"{path}: an architecture needs its weights (a state dict or safetensors file)")
    output = card.get("output", "softmax")
    if output not in OUTPUTS:
        raise MedexplainError(f"{path}: output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    arguments = card.get("arguments") or {}
    if not isinstance(arguments, dict):
        raise MedexplainError(f"{path}: arguments must be an object, got {arguments!r}")
    method_params = card.get("method_params") or {}
    if not isinstance(method_params, dict) or not all(isinstance(v, dict) for v in method_params.values()):
        raise MedexplainError(f"{path}: method_params must map method names to objects, got {method_params!r}")
    in_channels = card.get("in_channels", arguments.get("in_channels"))
    return {
        **card,
        "format": CARD_FORMAT,
        "card": str(path),
        "model": card.get("architecture") or "torchscript",
        "model_args": {**arguments, **({"in_channels": int(in_channels)} if in_channels is not None else {})},
        "preprocessing": dict(card.get("preprocessing") or {}),
        "class_names": list(card.get("classes") or []),
        "task": "ce" if output == "softmax" else "bce",
    }


def method_params_for(
    config: Mapping[str, Any], methods: Sequence[str], given: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]]:
    """Hyperparameters per method of ``methods``: the card's ``method_params`` (a run folder has none), each
    overridden key by key by ``given`` (the caller's, e.g. from flags)."""
    card, given = config.get("method_params") or {}, given or {}
    merged = {name: {**card.get(name, {}), **given.get(name, {})} for name in (*methods, *given)}
    return {name: values for name, values in merged.items() if values or name in given}


def build_from_card(config: dict[str, Any]) -> nn.Module:
    """The model of a card read by :func:`read_card`, with its weights loaded (eval mode, on the CPU)."""
    folder = Path(config["card"]).parent
    if config.get("torchscript"):
        return load_torchscript(folder / config["torchscript"])
    kind, _, name = str(config["architecture"]).partition(":")
    if kind not in KINDS or not name:
        raise MedexplainError(f"{config['card']}: architecture {config['architecture']!r} must be one of "
                              "medexplain:<name>, monai:<name>, factory:<file.py>:<function>")  # fmt: skip
    arguments = dict(config.get("arguments") or {})
    if kind == "medexplain":
        model = create_model(name, **arguments)
    elif kind == "monai":
        model = _monai_network(name, arguments, config["card"])
    else:
        model = _factory(folder, name, arguments, config["card"])
    weights = folder / config["weights"]
    return load_state(model, read_state_dict(weights), weights).eval()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Named tensors of a state dict saved with ``torch.save`` (read with ``weights_only=True``, never unpickled
    beyond tensors) or as safetensors; a nested ``state_dict`` and a ``module.`` prefix are unwrapped."""
    if path.suffix == ".safetensors":
        return read_tensors(path)
    if not path.is_file():
        raise MedexplainError(f"{path}: no such weights file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MedexplainError(f"{path}: not a plain state dict of tensors (refused to load it: {first})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise MedexplainError(f"{path}: expected a state dict (names -> tensors), got {type(loaded).__name__}")
    if loaded and all(str(k).startswith("module.") for k in loaded):
        loaded = {str(k)[len("module.") :]: v for k, v in loaded.items()}
    return {str(k): v for k, v in loaded.items()}


def load_torchscript(path: Path) -> nn.Module:
    """A TorchScript archive written by ``torch.jit.save`` (eval mode, on the CPU)."""
    if not path.is_file():
        raise MedexplainError(f"{path}: no such TorchScript file")
    try:
        with warnings.catch_warnings():  # torch's notice to developers, not news to a user who gave an archive
            warnings.filterwarnings("ignore", message="`torch.jit.load` is deprecated", category=DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except (RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MedexplainError(f"{path}: not a TorchScript archive ({first})") from None


def _monai_network(name: str, arguments: dict[str, Any], card: str) -> nn.Module:
    from monai.networks import nets

    network = getattr(nets, name, None)
    if not isinstance(network, type) or not issubclass(network, nn.Module):
        known = [n for n in dir(nets) if isinstance(getattr(nets, n), type) and issubclass(getattr(nets, n), nn.Module)]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise MedexplainError(f"{card}: MONAI has no network {name!r}{hint}")
    try:
        return network(**arguments)
    except TypeError as error:
        raise MedexplainError(f"{card}: monai {name}: {error}") from None


def _factory(folder: Path, name: str, arguments: dict[str, Any], card: str) -> nn.Module:
    file, _, function = name.rpartition(":")
    path = folder / file
    if not file or not function or path.suffix != ".py" or not path.is_file():
        raise MedexplainError(f"{card}: factory {name!r} must be <file.py>:<function> of an existing file")
    spec = importlib.util.spec_from_file_location(f"medexplain_user_factory_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the user named this file in their card: it is their code
    build = getattr(module, function, None)
    if not callable(build):
        raise MedexplainError(f"{path}: has no function {function!r}")
    model = build(**arguments)
    if not isinstance(model, nn.Module):
        raise MedexplainError(f"{path}: {function}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def describe() -> str:
    """One line per kind of architecture a card can name (for listings)."""
    return (f"medexplain:<{'|'.join(MODELS.available()[:3])}|...>, monai:<network class>, "
            "factory:<file.py>:<function>")  # fmt: skip
