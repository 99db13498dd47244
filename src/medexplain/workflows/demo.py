"""The main job: ``medexplain demo`` runs the whole toolkit once, end to end.

Synthetic fundus images with lesion masks (or a real dataset folder) -> a sparse BagNet and a ResNet-18
baseline -> evidence maps, Grad-CAM, LRP and integrated gradients -> localisation and faithfulness against
the lesion masks -> concept analysis of the lesion types -> the report (built by the caller's ``report``
function, the last stage). Every stage writes its own sub-folder and is skipped when already complete, so an
interrupted demo continues where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medexplain.errors import MedexplainError
from medexplain.files import write_text

if TYPE_CHECKING:
    from medexplain.concepts.analysis import ConceptSettings


def _default_concepts() -> ConceptSettings:
    from medexplain.concepts.analysis import ConceptSettings

    return ConceptSettings(cav_runs=10, random_runs=20, learning_sizes=(10, 20, 50), learning_draws=3)


@dataclass(frozen=True)
class DemoModel:
    """A model the demo trains: registry ``name``, the explainers applied to it, and training settings."""

    name: str
    methods: tuple[str, ...]
    epochs: int
    training: dict[str, Any] = field(default_factory=dict)  # further settings of medexplain.train.TrainConfig


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo; the defaults finish in under 5 minutes on 2 CPU cores (benchmarks/RESULTS.md).

    ``label`` is the synthetic images' task: ``"referable"`` DR (grade >= 2, the binary task of Djoumessi et al.,
    MIDL 2023) or the 5-level ``"grade"``.
    """

    n: int = 300
    size: int = 96
    seed: int = 0
    label: str = "referable"
    batch_size: int = 16
    explain_items: int = 32
    models: tuple[DemoModel, ...] = (
        DemoModel(
            "sparse-bagnet9-light",
            ("evidence", "gradcam", "lrp-epsilon-plus-flat", "integrated-gradients"),
            epochs=16,
            # Patches may only add evidence (ReLU head) and the penalty acts on the evidence beyond the class
            # bias, after a warm-up: the configuration that made evidence sparse without losing accuracy in
            # benchmarks/bagnet_retinamnist.py (see benchmarks/RESULTS.md).
            training={
                "model_args": {"evidence_activation": "relu"},
                "sparsity_lambda": 0.01,
                "sparsity_on": "local",
                "sparsity_warmup": 2,
                # With 44 validation images AUROC saturates early (0.99 at an epoch with accuracy 0.64).
                "monitor": "balanced_accuracy",
            },
        ),
        DemoModel(
            "resnet18",
            ("gradcam", "lrp-epsilon-plus-flat", "integrated-gradients"),
            epochs=6,
            training={"monitor": "balanced_accuracy"},
        ),
    )
    metrics: tuple[str, ...] = (
        "pointing-game",
        "relevance-mass",
        "mask-auroc",
        "deletion-auc",
        "insertion-auc",
        "gini",
    )
    mask: str = "lesion"
    method_params: dict[str, dict[str, Any]] = field(default_factory=lambda: {"integrated-gradients": {"steps": 24}})
    concepts: ConceptSettings = field(default_factory=_default_concepts)


Stage = Callable[[], object]


class StageLog:
    """Times each stage and keeps ``run.json`` (command, settings, versions, stage timings) up to date."""

    def __init__(self, out: Path, settings: DemoSettings, data: Path, command: str) -> None:
        self.path = out / "run.json"
        self.info: dict[str, Any] = {
            "kind": "medexplain-demo",
            "command": command,
            "seed": settings.seed,
            "data": str(data),
            "settings": asdict(settings),
            "stages": {},
        }

    def run(self, name: str, stage: Stage, echo: Callable[[str], None]) -> None:
        echo(f"[demo] {name} ...")
        start = time.perf_counter()
        stage()
        seconds = time.perf_counter() - start
        self.info["stages"][name] = round(seconds, 2)
        self.info["seconds"] = round(sum(self.info["stages"].values()), 2)
        write_text(self.path, json.dumps(self.info, indent=2) + "\n")


def run_demo(
    out: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    settings: DemoSettings | None = None,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    report: Callable[[Path], Path] | None = None,
    command: str = "medexplain demo",
) -> Path | None:
    """Run the demo into ``out``; returns what ``report(out)`` returned (the report's path), or ``None``.

    Args:
        data: a dataset folder (manifest with masks) to use instead of the synthetic fundus images.
        overwrite: start from scratch, removing a previous demo in ``out``; otherwise completed stages are kept.
        report: the last stage, e.g. :func:`medexplain.report.build_report`.
        command: how the demo was started, recorded in ``run.json``.
    """
    settings = settings or DemoSettings()
    out = Path(out)
    if overwrite and out.exists():
        if not (out / "run.json").is_file():
            raise MedexplainError(f"{out}: exists and is not a demo folder; refusing to delete it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(data) if data is not None else out / "data"
    log = StageLog(out, settings, data_dir, command)

    if data is None and not (data_dir / "manifest.csv").is_file():
        log.run("synthetic data", partial(_synthesise, data_dir, settings, progress), echo)
    from medexplain.data import load_dataset

    dataset = load_dataset(data_dir)
    mask = settings.mask if settings.mask in dataset.mask_names else next(iter(dataset.mask_names), None)
    for model in settings.models:
        run_dir, maps_dir, scores_dir = (out / part / model.name for part in ("models", "explanations", "evaluation"))
        log.run(f"train {model.name}", partial(_train, model, data_dir, run_dir, settings, progress), echo)
        log.run(
            f"explain {model.name}", partial(_explain, model, run_dir, data_dir, maps_dir, settings, progress), echo
        )
        if not (scores_dir / "summary.csv").is_file():
            stage = partial(_evaluate, run_dir, maps_dir, data_dir, scores_dir, settings, mask, progress)
            log.run(f"evaluate {model.name}", stage, echo)
    concepts_dir = out / "concepts"
    if dataset.label_names and not (concepts_dir / "summary.json").is_file():
        baseline = out / "models" / settings.models[-1].name
        log.run("concepts", partial(_concepts, baseline, data_dir, concepts_dir, settings, progress), echo)
    if report is None:
        return None
    built: list[Path] = []
    log.run("report", lambda: built.append(report(out)), echo)
    return built[0]


def _synthesise(data_dir: Path, settings: DemoSettings, progress: bool) -> None:
    from medexplain.data.synth import write_fundus

    write_fundus(
        data_dir, n=settings.n, size=settings.size, seed=settings.seed, show_progress=progress, label=settings.label
    )


def _train(model: DemoModel, data_dir: Path, run_dir: Path, settings: DemoSettings, progress: bool) -> None:
    from medexplain.train import TrainConfig, train
    from medexplain.train.state import RESUME_FILE

    config = TrainConfig(model.name, epochs=model.epochs, batch_size=settings.batch_size, size=settings.size,
                         seed=settings.seed, class_weights="balanced", **model.training)  # fmt: skip
    train(config, data_dir, run_dir, resume=(run_dir / RESUME_FILE).is_file(), progress=progress)


def _explain(
    model: DemoModel, run_dir: Path, data_dir: Path, maps_dir: Path, settings: DemoSettings, progress: bool
) -> None:
    from medexplain.workflows.explain import explain_run

    params = {name: p for name, p in settings.method_params.items() if name in model.methods}
    explain_run(run_dir, data_dir, model.methods, maps_dir, split="test", method_params=params,
                max_items=settings.explain_items, batch_size=8, progress=progress)  # fmt: skip


def _evaluate(
    run_dir: Path, maps_dir: Path, data_dir: Path, scores_dir: Path, settings: DemoSettings, mask: str | None,
    progress: bool,
) -> None:  # fmt: skip
    from medexplain.workflows.evaluate import evaluate_run

    metrics = [m for m in settings.metrics if mask is not None or m in ("deletion-auc", "insertion-auc", "gini")]
    evaluate_run(maps_dir, data_dir, scores_dir, model=run_dir, metrics=metrics, mask=mask, batch_size=16,
                 seed=settings.seed, overwrite=True, progress=progress)  # fmt: skip


def _concepts(run_dir: Path, data_dir: Path, concepts_dir: Path, settings: DemoSettings, progress: bool) -> None:
    from medexplain.concepts.outputs import write_report
    from medexplain.concepts.run import analyse_run

    report = analyse_run(run_dir, data_dir, settings=settings.concepts, progress=progress)
    write_report(report, concepts_dir, overwrite=True)
