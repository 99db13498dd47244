"""The audit: a model and a dataset (with masks, or without: then no localisation) in, every applicable
explanation scored against baselines, one verdict out.

A score means nothing alone: a Gaussian blob at the image centre may point at lesions more often than Grad-CAM.
The audit explains the model with every method its layers allow, and computes reference maps that know nothing of
the model (a constant map, a seeded random map, a centre prior, the mean training mask, the image's own edges)
and each method's maps for a copy of the model with randomised weights. Every map is scored with localisation,
faithfulness, robustness, complexity and sanity metrics, and every method is compared with the baselines on the
same images:

- **localises**: significantly better than the best baseline (one-sided paired Wilcoxon over images, Holm-
  corrected over all comparisons of the audit, p < ``alpha``) on more than half of the localisation metrics;
  the baselines are the reference maps and the other methods' maps on the randomised model (a method's own
  randomised maps are the reference of the randomisation check);
- **faithful**: significantly better than the random map on more than half of the faithfulness metrics;
- **shortcuts** (a flag, not a criterion of the ranking): the regions (image border, background, landmark masks)
  on which the method's relevance is out of proportion to their area (:mod:`medexplain.workflows.shortcuts`);
- **passes the randomisation check**: once the model's top layers are re-drawn, its maps keep less than half of
  their ranking (the upper end of the 95 % interval of the mean rank similarity is below 0.5); a map that does
  not depend on the model (edges, a prior) keeps all of it.

Folder (each part resumable; ``verdict.json`` written last, atomically)::

    OUT/explanations/        methods and baselines (medexplain.workflows.explanations)
    OUT/randomised/          the methods on the randomised model
    OUT/scores/, OUT/scores-randomised/   their evaluations (medexplain.workflows.scores)
    OUT/nifti/<method>/      3D maps on the source image's grid, with its affine (NIfTI sources)
    OUT/verdict.json         {"format": "medexplain-audit/1", "verdict": [...], "ranking": [...], ...}

A multi-label model gets one such folder per label, ``OUT/labels/<label>/``, and ``OUT/verdict.json``
(``"medexplain-audit-labels/1"``) gathers their verdicts.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medexplain.errors import MedexplainError
from medexplain.explain.base import EXPLAINERS, Explainer
from medexplain.explain.cam import default_layer
from medexplain.explain.targets import Target
from medexplain.explain.transformer import attention_modules
from medexplain.files import write_text
from medexplain.metrics.registry import metric_info
from medexplain.metrics.significance import holm, wilcoxon_signed_rank
from medexplain.metrics.summary import bootstrap_interval
from medexplain.models import load, run_dataset
from medexplain.models.cards import method_params_for
from medexplain.workflows.evaluate import evaluate_run
from medexplain.workflows.executors import Executor
from medexplain.workflows.explain import build_explainers, explain_run
from medexplain.workflows.explanations import load_explanations
from medexplain.workflows.shortcuts import PROPORTION, shortcut_check

AUDIT_FORMAT = "medexplain-audit/1"
LABELS_FORMAT = "medexplain-audit-labels/1"
VERDICT_FILE = "verdict.json"
LOCALISATION = ("pointing-game", "relevance-mass", "mask-auroc", "dice", "iou")
FAITHFULNESS = ("deletion-auc", "insertion-auc", "faithfulness-correlation")
OTHERS = ("max-sensitivity", "gini", "model-randomisation")
BASELINES = ("baseline-constant", "baseline-random", "baseline-centre", "baseline-prior", "baseline-edges")
RANDOMISATION_LIMIT = 0.5
PRIMARY = "mask-auroc"
FALLBACK = "deletion-auc"
AFFORDABLE = {"max-sensitivity": {"samples": 5}, "model-randomisation": {"layers": 3},
              "faithfulness-correlation": {"runs": 50}}  # fmt: skip
"""The audit's metric parameters: 5 noise draws, the top 3 layers re-drawn, 50 random subsets."""
RANDOM_MODEL = " (random model)"
_MULTI_LABEL_PARAMS = {"deletion-auc": {"output": "sigmoid"}, "insertion-auc": {"output": "sigmoid"}}
"""A label's probability is the sigmoid of its logit (the softmax over labels would mix them)."""
_FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class AuditSettings:
    """What an audit runs.

    Attributes:
        methods: explainers to audit (default: every registered one that the model allows).
        baselines: reference maps (``baseline-*`` explainers; ``baseline-prior`` is the mean training mask).
        randomised_model: also explain a copy of the model with re-drawn weights (a baseline of each method).
        metrics: metrics scored (localisation, faithfulness, robustness, complexity, sanity).
        metric_params: parameters per metric; the defaults keep robustness and sanity affordable (5 noise draws;
            the top 3 layers re-drawn one after another).
        method_params: hyperparameters per method (``{"integrated-gradients": {"steps": 32}}``).
        landmarks: mask columns of regions that should not decide the prediction (e.g. ``disc``), for the shortcut
            check (:mod:`medexplain.workflows.shortcuts`), beside the image border and background.
        field_mask: a mask column of the field of view (relevance outside it is checked); default: the image's
            own background.
        max_memory: bytes of activations per model call of the methods that batch perturbations and of the
            model-bound metrics (default: their own budget; :mod:`medexplain.explain.budget`).
        alpha: significance level of the verdicts.
        resamples, seed: the bootstrap intervals, and the seed of every random draw.
    """

    methods: tuple[str, ...] | None = None
    baselines: tuple[str, ...] = BASELINES
    randomised_model: bool = True
    metrics: tuple[str, ...] = LOCALISATION + FAITHFULNESS + OTHERS
    metric_params: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: dict(AFFORDABLE))
    method_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    landmarks: tuple[str, ...] = ()
    field_mask: str | None = None
    max_memory: int | None = None
    alpha: float = 0.05
    resamples: int = 1000
    seed: int = 0


def applicable_methods(
    model: torch.nn.Module, x: torch.Tensor, requested: Sequence[str] | None, layer: str | None,
    params: Mapping[str, Mapping[str, Any]], own: Mapping[str, Explainer] | None = None,
    max_memory: int | None = None,
) -> tuple[dict[str, Explainer], dict[str, str]]:  # fmt: skip
    """The explainers that run on ``model`` (tried on one image ``x`` (1, C, *spatial)), and why the others do not.

    Without ``requested``, every registered method but the baselines is tried, except the methods made for
    transformers (AttnLRP, CP-LRP) on a model without attention modules, where they would repeat LRP-epsilon; on a
    transformer the CNN composites of LRP refuse and the CAMs read its tokens. ``own`` explainers (a user's
    methods, not registered) are tried too; a method that fails is reported with its reason.
    """
    skipped: dict[str, str] = {}
    if requested:
        names = list(requested)
    else:
        attention = bool(attention_modules(model))
        names = []
        for entry in (e for e in EXPLAINERS if e.metadata.get("category") != "baseline"):
            if entry.metadata.get("attention") == "made-for" and not attention:
                skipped[entry.name] = "made for transformers; the model has no attention module"
            else:
                names.append(entry.name)
    candidates: dict[str, Any] = {name: None for name in names} | dict(own or {})
    usable = {}
    for name, given in candidates.items():
        try:
            explainer = given or build_explainers([name], layer=layer, params={name: params[name]} if name in params
                                                  else None, max_memory=max_memory)[name]  # fmt: skip
            explainer(model, x, "predicted")
        except (MedexplainError, RuntimeError, NotImplementedError, TypeError) as error:
            skipped[name] = " ".join(str(error).split())[:300] or type(error).__name__
        else:
            usable[name] = explainer
    return usable, skipped


def _cam_layer(model: torch.nn.Module, config: Mapping[str, Any], layer: str | None) -> str | None:
    """The CAM layer: asked for, named by the card, or detected (the last convolutional block; in a transformer
    the input of its last attention module)."""
    if layer or config.get("cam_layer"):
        return layer or config["cam_layer"]
    try:
        return default_layer(model)
    except (MedexplainError, RuntimeError):
        return None


def mean_training_mask(
    config: Mapping[str, Any], data: str | os.PathLike[str], mask: str, size: int | None
) -> torch.Tensor:
    """The mean of the ``mask`` masks of the training split, at the model's input size ``(*spatial)``."""
    train = run_dataset(config, data, "train", size=size)
    if not len(train) or mask not in train.mask_names:
        raise MedexplainError(f"{data}: no training split with {mask!r} masks for the mean-mask prior")
    total = None
    for index in range(len(train)):
        current = train[index].masks[mask][0].double()
        total = current if total is None else total + current
    return total / len(train)


def audit_run(
    model: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    mask: str | None = None,
    split: str | None = "test",
    size: int | None = None,
    layer: str | None = None,
    target: Target = "predicted",
    settings: AuditSettings | None = None,
    explainers: Mapping[str, Explainer] | None = None,
    max_items: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    executor: Executor | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Audit the model ``model`` (a run folder or a model card) on ``split`` of ``data`` against its ``mask`` masks
    and write ``out`` (see the module docstring); returns the verdict document.

    A dataset without masks is audited without localisation: the metrics and baselines that need masks are listed
    as not applicable, ``localises`` is ``"n/a"``, and the ranking falls back to faithfulness (deletion AUC).

    A multi-label (sigmoid) model is audited once per label that has a mask of its own name (``mask_<label>``), or
    for the label ``mask`` only: each label's maps explain that label's logit and are scored against its mask in
    ``out/labels/<label>/`` (a complete audit folder), and ``out/verdict.json`` (format
    :data:`LABELS_FORMAT`) gathers the verdict of every label.

    ``target`` is the class a single-label model's maps explain: ``"predicted"`` (each image's predicted class) or
    a class index (e.g. the lesion class, so that a missed lesion is still explained as a lesion).

    ``explainers`` adds a user's own methods (explainer objects, not registered) to the audit. A killed audit
    continues where it stopped when run again with the same arguments.
    """
    settings = settings or AuditSettings()
    out = Path(out)
    network, config = load(model, device=device)
    dataset = run_dataset(config, data, split, size=size, run_dir=model)
    if not len(dataset):
        raise MedexplainError(f"{data}: split {split!r} has no items to audit")
    masks = list(dataset.mask_names)
    regions = [("landmarks", name) for name in settings.landmarks] + [("field_mask", settings.field_mask)] * bool(
        settings.field_mask)  # fmt: skip
    unknown = [(parameter, name) for parameter, name in regions if name not in masks]
    if unknown:
        parameter, name = unknown[0]
        raise MedexplainError(f"`{parameter}` {name!r} is not in {data}; its masks: {', '.join(masks) or 'none'}",
                              parameter=parameter)  # fmt: skip
    common = {"model": model, "network": network, "config": config, "dataset": dataset, "data": data,
              "split": split, "size": size, "layer": layer, "settings": settings, "explainers": explainers,
              "max_items": max_items, "batch_size": batch_size, "device": device, "executor": executor,
              "progress": progress}  # fmt: skip
    if config.get("task") != "bce":
        mask = mask or (masks[0] if masks else None)
        if mask is not None and mask not in masks:
            raise MedexplainError(f"`mask` {mask!r} is not in {data}; its masks: {', '.join(masks) or 'none'}",
                                  parameter="mask")  # fmt: skip
        names = list(config.get("class_names") or [])
        explains = "the predicted class" if target == "predicted" else \
            f"class {names[target]!r} (output {target})" if isinstance(target, int) and target < len(names) else \
            f"class {target}"  # fmt: skip
        return _audit_target(out=out, mask=mask, target=target, explains=explains, **common)
    if target != "predicted":
        raise MedexplainError(f"{model}: a multi-label model is audited per label; `target` {target!r} applies to "
                              "single-label models only", parameter="target")  # fmt: skip
    labels = _audited_labels(network, config, dataset, data, mask, device)
    params = {metric: dict(values) for metric, values in settings.metric_params.items()}
    for metric, defaults in _MULTI_LABEL_PARAMS.items():
        params[metric] = {**defaults, **params.get(metric, {})}
    common["settings"] = replace(settings, metric_params=params)
    documents = {}
    for label, index in labels.items():
        documents[label] = _audit_target(out=out / "labels" / label, mask=label if dataset.mask_names else None,
                                         target=index,
                                         explains=f"label {label!r} (output {index})", **common)  # fmt: skip
    document = _plain({
        "format": LABELS_FORMAT, "model": str(model), "data": str(data), "split": split,
        "labels": {label: {"index": labels[label], "folder": f"labels/{label}", "verdict": doc["verdict"],
                           "ranking": doc["ranking"], "not_applicable": doc["not_applicable"]}
                   for label, doc in documents.items()},
    })  # fmt: skip
    write_text(out / VERDICT_FILE, json.dumps(document, indent=1, allow_nan=False) + "\n")
    return document


def _audited_labels(
    network: torch.nn.Module, config: Mapping[str, Any], dataset: Any, data: str | os.PathLike[str],
    mask: str | None, device: str,
) -> dict[str, int]:  # fmt: skip
    """``{label: output index}`` of a multi-label model's labels that have a mask of their name (or ``mask``)."""
    names = list(config.get("label_names") or config.get("class_names") or dataset.label_names)
    with torch.no_grad():
        outputs = int(network(dataset[0].image[None].to(device)).shape[1])
    if len(names) != outputs:
        raise MedexplainError(f"{data}: the model has {outputs} outputs but {len(names)} label names "
                              f"({', '.join(names) or 'none'}); name them in the card's classes")  # fmt: skip
    masks = list(dataset.mask_names)
    if mask is not None and mask not in names:
        raise MedexplainError(f"`mask` {mask!r} is not one of the model's labels ({', '.join(names)}); a multi-label "
                              "model is audited per label against mask_<label>", parameter="mask")  # fmt: skip
    labels = {name: index for index, name in enumerate(names) if (name in masks or not masks) and mask in (None, name)}
    if not labels:
        raise MedexplainError(f"{data}: no label of the model has a mask of its name (labels: {', '.join(names)}; "
                              f"masks: {', '.join(masks) or 'none'}); add mask_<label> columns")  # fmt: skip
    unsafe = [name for name in labels if not _FOLDER_NAME.fullmatch(name)]
    if unsafe:
        raise MedexplainError(f"{data}: label {unsafe[0]!r} cannot name a folder (letters, digits, . _ - only)")
    return labels


def _audit_target(
    *, model: str | os.PathLike[str], network: torch.nn.Module, config: Mapping[str, Any], dataset: Any,
    data: str | os.PathLike[str], out: Path, mask: str | None, target: Target, explains: str, split: str | None,
    size: int | None,
    layer: str | None, settings: AuditSettings, explainers: Mapping[str, Explainer] | None, max_items: int | None,
    batch_size: int, device: str, executor: Executor | None, progress: bool,
) -> dict[str, Any]:  # fmt: skip
    """One audit: ``target`` (``"predicted"``, a class or a label's index; ``explains`` says which in words)
    explained, scored against the ``mask`` masks (None: a dataset without masks, audited without localisation)."""
    if mask is None:
        unmasked = {m: f"{data} has no masks" for m in settings.metrics if metric_info(m).needs_mask}
        settings = replace(settings, metrics=tuple(m for m in settings.metrics if m not in unmasked))
    else:
        unmasked = {}
    cam_layer = _cam_layer(network, config, layer)
    probe = dataset[0].image[None].to(device)
    params = method_params_for(config, list(config.get("method_params") or {}), settings.method_params)
    methods, skipped = applicable_methods(network, probe, settings.methods, cam_layer, params, explainers,
                                          settings.max_memory)  # fmt: skip
    if not methods:
        raise MedexplainError(f"{model}: none of the methods runs on this model: {json.dumps(skipped)}")
    baselines, skipped_baselines = baseline_explainers(settings, config, data, mask, size, dataset[0].image.shape[1:])
    common = {"split": split, "size": size, "max_items": max_items, "batch_size": batch_size, "device": device,
              "executor": executor, "progress": progress}  # fmt: skip
    explainers = {**methods, **baselines}
    explain_run(model, data, list(explainers), out / "explanations", explainers=explainers, target=target, **common)
    if settings.randomised_model:
        explain_run(model, data, list(methods), out / "randomised", explainers=methods, randomised=settings.seed,
                    target=target, **common)  # fmt: skip
    scoring = {"split": split, "size": size, "mask": mask, "batch_size": batch_size, "device": device,
               "executor": executor, "progress": progress, "resamples": settings.resamples, "seed": settings.seed,
               "metric_params": settings.metric_params, "max_memory": settings.max_memory}  # fmt: skip
    _evaluate_once(out / "explanations", data, out / "scores", model, settings.metrics, explainers, scoring)
    if settings.randomised_model:
        plain = [m for m in settings.metrics if not metric_info(m).needs_explainer]
        _evaluate_once(out / "randomised", data, out / "scores-randomised", model, plain, {}, scoring)
    if dataset.spatial_dims == 3:
        from medexplain.workflows.volumes import write_source_grid_maps

        write_source_grid_maps(out / "explanations", data, split, out / "nifti")
    document = verdict(out, settings, list(methods), list(baselines))
    shortcuts = shortcut_check(load_explanations(out / "explanations"), dataset, list(explainers),
                               landmarks=settings.landmarks, field=settings.field_mask, resamples=settings.resamples,
                               seed=settings.seed)  # fmt: skip
    for row in document["verdict"]:
        row["shortcuts"] = [region for region, per in shortcuts.items() if per[row["method"]]["flagged"]]
    document["shortcuts"] = shortcuts
    document["rules"]["shortcuts"] = (f"95 % interval of the relevance density ratio in the region above "
                                      f"{PROPORTION} (1: relevance in proportion to the region's area)")  # fmt: skip
    document.update({
        "format": AUDIT_FORMAT, "model": str(model), "data": str(data), "split": split, "mask": mask,
        "target": target, "explains": explains, "size": size, "preprocessing": config.get("preprocessing", {}),
        "cam_layer": cam_layer,
        "not_applicable": {**skipped, **skipped_baselines, **unmasked}, "settings": _plain(asdict(settings)),
    })  # fmt: skip
    document = _plain(document)
    write_text(out / VERDICT_FILE, json.dumps(document, indent=1, allow_nan=False) + "\n")
    return document


def baseline_explainers(
    settings: AuditSettings, config: Mapping[str, Any], data: str | os.PathLike[str], mask: str | None,
    size: int | None,
    spatial: tuple[int, ...],
) -> tuple[dict[str, Explainer], dict[str, str]]:  # fmt: skip
    """The baselines of ``settings`` as explainers (``baseline-prior``: the mean training mask of ``mask`` at the
    test images' ``spatial`` size), and the reasons of those that cannot be built."""
    baselines, skipped = {}, {}
    for name in settings.baselines:
        if name == "baseline-prior" and mask is None:
            skipped[name] = f"{data} has no masks to average"
        elif name == "baseline-prior":
            try:
                prior = mean_training_mask(config, data, mask, size)
            except MedexplainError as error:
                skipped[name] = str(error)
                continue
            if tuple(prior.shape) != tuple(spatial):
                skipped[name] = f"training masks {tuple(prior.shape)} and test images {tuple(spatial)} differ in size"
                continue
            baselines[name] = build_explainers([name], params={name: {"prior": prior}})[name]
        else:
            params = {name: {"seed": settings.seed}} if name == "baseline-random" else None
            baselines[name] = build_explainers([name], params=params)[name]
    return baselines, skipped


def _evaluate_once(
    explanations: Path, data: str | os.PathLike[str], out: Path, model: str | os.PathLike[str],
    metrics: Sequence[str], explainers: Mapping[str, Explainer], scoring: Mapping[str, Any],
) -> None:  # fmt: skip
    if (out / "summary.json").is_file():
        return
    evaluate_run(explanations, data, out, model=model, metrics=list(metrics), explainers=explainers, overwrite=True,
                 **scoring)  # fmt: skip


def _per_image(folder: Path, suffix: str = "") -> dict[str, dict[str, dict[str, float]]]:
    """``{metric: {method + suffix: {image id: score}}}`` of a scores folder (the first explained target)."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    with (folder / "per_sample.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            per_method = table.setdefault(row["metric"], {}).setdefault(row["method"] + suffix, {})
            per_method.setdefault(row["id"], float(row["score"]) if row["score"] else math.nan)
    return table


def audit_scores(out: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{metric: {map: {image id: score}}}`` of the audit folder ``out``, the maps of the randomised model named
    with :data:`RANDOM_MODEL` appended."""
    scores = _per_image(out / "scores")
    if (out / "scores-randomised").is_dir():
        for metric, per_method in _per_image(out / "scores-randomised", RANDOM_MODEL).items():
            scores.setdefault(metric, {}).update(per_method)
    return scores


def verdict(out: Path, settings: AuditSettings, methods: Sequence[str], baselines: Sequence[str]) -> dict[str, Any]:
    """The verdict of an audit folder whose scores are written: per method the three criteria, the comparisons
    behind them and a ranking (see the module docstring)."""
    scores = audit_scores(out)
    references = [*baselines, *(m + RANDOM_MODEL for m in methods if settings.randomised_model)]
    comparisons = []
    for method in methods:
        for metric in (m for m in LOCALISATION + FAITHFULNESS if m in scores and method in scores[m]):
            # a method's own maps on the randomised model are the reference of the randomisation check, not here
            own = method + RANDOM_MODEL
            against = [r for r in references if r != own] if metric in LOCALISATION else \
                [b for b in ("baseline-random",) if b in baselines]  # fmt: skip
            candidates = [b for b in against if b in scores[metric]]
            if candidates:
                comparisons.append(_compare(scores[metric], method, metric, candidates, settings))
    for comparison, adjusted in zip(comparisons, holm([c["p"] for c in comparisons]), strict=True):
        comparison["p_holm"] = adjusted
        comparison["better"] = bool(adjusted < settings.alpha) if not math.isnan(adjusted) else False
    table = []
    for method in methods:
        mine = [c for c in comparisons if c["method"] == method]
        summary = {m: _interval(scores[m][method], settings) for m in scores if method in scores[m]}
        table.append({
            "method": method,
            "localises": _majority([c for c in mine if c["metric"] in LOCALISATION], "the best baseline"),
            "faithful": _majority([c for c in mine if c["metric"] in FAITHFULNESS], "the random map"),
            "randomisation": _randomisation(summary.get("model-randomisation")),
            "metrics": summary,
        })  # fmt: skip
    passes = {row["method"]: sum(row[k]["verdict"] == "pass" for k in ("localises", "faithful", "randomisation"))
              for row in table}  # fmt: skip
    primary_metric = PRIMARY if PRIMARY in scores else FALLBACK
    sign = 1 if metric_info(primary_metric).higher_is_better else -1
    primary = {row["method"]: sign * row["metrics"].get(primary_metric, {}).get("mean", math.nan) for row in table}
    ranking = sorted(methods, key=lambda m: (-passes[m], -_finite(primary[m])))
    reference_rows = {b: {m: _interval(scores[m][b], settings) for m in scores if b in scores[m]} for b in references}
    return {"verdict": table, "ranking": ranking, "comparisons": comparisons, "baselines": reference_rows,
            "rules": {"alpha": settings.alpha, "test": "one-sided paired Wilcoxon signed-rank over images, Holm",
                      "localises": "better than the best baseline on more than half of the localisation metrics",
                      "faithful": "better than the random map on more than half of the faithfulness metrics",
                      "randomisation": f"95 % interval of the mean rank similarity below {RANDOMISATION_LIMIT}",
                      "primary": primary_metric}}  # fmt: skip


def _compare(
    per_method: Mapping[str, Mapping[str, float]], method: str, metric: str, candidates: Sequence[str],
    settings: AuditSettings,
) -> dict[str, Any]:  # fmt: skip
    higher = metric_info(metric).higher_is_better
    means = {b: _mean(per_method[b].values()) for b in candidates}
    best = max(candidates, key=lambda b: _finite(means[b]) if higher else -_finite(means[b]))
    ids = [i for i in per_method[method] if i in per_method[best]]
    ours, theirs = ([per_method[m][i] for i in ids] for m in (method, best))
    test = wilcoxon_signed_rank(ours, theirs) if higher else wilcoxon_signed_rank(theirs, ours)
    return {"method": method, "metric": metric, "higher_is_better": higher, "mean": _mean(ours),
            "baseline": best, "baseline_mean": means[best], "n": test.n, "statistic": test.statistic,
            "p": test.p}  # fmt: skip


def _majority(comparisons: list[dict[str, Any]], what: str) -> dict[str, Any]:
    if not comparisons:
        return {"verdict": "n/a", "reason": f"no metric compares it with {what}"}
    better = [c["metric"] for c in comparisons if c["better"]]
    verdict_ = "pass" if len(better) * 2 > len(comparisons) else "fail"
    return {"verdict": verdict_, "better_on": better, "of": [c["metric"] for c in comparisons]}


def _randomisation(summary: Mapping[str, float] | None) -> dict[str, Any]:
    if not summary or math.isnan(summary.get("ci_high", math.nan)):
        return {"verdict": "n/a", "reason": "model-randomisation was not scored"}
    passed = summary["ci_high"] < RANDOMISATION_LIMIT
    return {"verdict": "pass" if passed else "fail", "similarity": summary["mean"], "ci_high": summary["ci_high"]}


def _interval(values: Mapping[str, float], settings: AuditSettings) -> dict[str, float]:
    finite = [v for v in values.values() if not math.isnan(v)]
    mean, low, high = bootstrap_interval(finite, resamples=settings.resamples, seed=settings.seed)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": len(finite), "excluded": len(values) - len(finite)}


def _mean(values: Any) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def _finite(value: float) -> float:
    return -math.inf if math.isnan(value) else value


def _plain(value: Any) -> Any:
    """JSON-safe: tensors become their shape, NaN and infinities null."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)}"
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
