"""``medexplain list models|methods|metrics``: every registered name, with one line on what it is and needs."""

from __future__ import annotations

import re

import typer

KINDS = ("models", "methods", "metrics")


def _first_sentence(text: str | None) -> str:
    paragraph = " ".join((text or "").strip().split("\n\n")[0].split())
    return re.split(r"\. (?=[A-Z])", paragraph)[0].rstrip(".")


def list_command(kind: str = typer.Argument(..., help="models, methods or metrics.")) -> None:
    """Print one line per registered model, explanation method or metric."""
    from medexplain.errors import MedexplainError

    if kind not in KINDS:
        raise MedexplainError(f"list: expected one of {', '.join(KINDS)}, got {kind!r}")
    rows = {"models": _models, "methods": _methods, "metrics": _metrics}[kind]()
    width = max(len(name) for name, _ in rows)
    for name, line in rows:
        typer.echo(f"{name:<{width}}  {line}")


def _models() -> list[tuple[str, str]]:
    from medexplain.models import MODELS

    rows = []
    for entry in MODELS:
        kind = "interpretable (evidence maps)" if entry.metadata.get("interpretable") else "post-hoc only"
        rows.append((entry.name, f"{kind}; {_first_sentence(entry.obj.__doc__)}"))
    rows.append(("<your own>", "a model card: monai:<Net>, medexplain:<name> or factory:<file.py>:<function> with "
                 "weights, or a TorchScript archive (see medexplain.models.cards)"))  # fmt: skip
    return rows


_NEEDS = {"evidence_map": "an evidence model", "attention": "a transformer (attention modules)"}


def _methods() -> list[tuple[str, str]]:
    import dataclasses

    from medexplain.explain import EXPLAINERS

    rows = []
    for entry in EXPLAINERS:
        fields = {f.name for f in dataclasses.fields(entry.obj) if f.init}
        needs = [_NEEDS.get(entry.metadata.get("needs"), "any classifier")]
        if entry.metadata.get("attention") == "refused":
            needs[0] += " without attention (transformers: attnlrp, cp-lrp)"
        if "layer" in fields:
            needs.append("a layer (default: the last convolutional block, or a transformer's last attention input)")
        category = entry.metadata.get("category", "")
        rows.append((entry.name, f"[{category}] {_first_sentence(entry.obj.__doc__)}; needs {', '.join(needs)}"))
    return rows


def _metrics() -> list[tuple[str, str]]:
    from medexplain.metrics import METRICS

    rows = []
    for entry in METRICS:
        info = entry.metadata["info"]
        needs = ", ".join(sorted(info.needs)) or "the maps only"
        direction = "higher is better" if info.higher_is_better else "lower is better"
        rows.append((entry.name, f"[{info.category}, {direction}] {_first_sentence(info.description)}; needs {needs}"))
    return rows


def register(app: typer.Typer) -> None:
    """Add the ``list`` command to ``app``."""
    app.command("list")(list_command)
