"""``TrainConfig``: every setting of a training run, validated once; the CLI builds it from flags."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medexplain.errors import MedexplainError
from medexplain.models.registry import MODELS

MONITORS = ("loss", "accuracy", "balanced_accuracy", "auroc", "kappa")
OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how; a run's identity (everything that changes the result, checked again on resume).

    Attributes:
        model: a registered model name, e.g. ``"sparse-bagnet9-light"``.
        model_args: extra model arguments (``in_channels``, ``num_classes`` and ``spatial_dims`` come from data).
        epochs, batch_size: length of the run (cosine learning-rate schedule over the epochs) and samples per step.
        lr: peak learning rate (default 1e-2 for SGD, 1e-3 for AdamW).
        optimizer: ``"sgd"`` (Nesterov, momentum 0.9, weight decay 5e-4) or ``"adamw"`` (weight decay 1e-2).
        weight_decay: default as for ``optimizer``.
        loss: ``"ce"``, ``"bce"`` (multi-label ``label_<name>`` targets), ``"ce+sparsity"``, ``"bce+sparsity"``,
            ``"ce+sibnet"``; default ``"ce+sparsity"`` for models registered with a ``sparsity_lambda``
            (``sparse-*``), else ``"ce"``.
        sparsity_lambda: weight of mean |evidence| (see :mod:`medexplain.train.losses` for the paper's scale);
            default: the model's registered value.
        sparsity_on: ``"evidence"`` (the map, as published) or ``"local"`` (the map minus the class bias).
        sparsity_warmup: ``W`` > 0 ramps lambda linearly, ``lambda * min(1, e / W)`` in epoch ``e = 0, 1, ...``
            (features first, then sparsity); epochs ``e >= W - 1`` can be chosen as the best epoch.
        class_weights: ``"balanced"`` or one weight per class, for the cross-entropy.
        size: resize every image to ``size`` along each spatial axis.
        seed: initialisation, shuffling and augmentation.
        patience: stop after this many epochs without improvement of ``monitor`` on the validation split.
        monitor: validation metric choosing the saved epoch, one of :data:`MONITORS`.
        augment: flips, small affine warps and intensity jitter during training.
        ema_decay: keep an exponential moving average of the weights (:class:`~medexplain.train.averaging.
            WeightAverage`); validation, the saved checkpoint and the final metrics use the averaged weights.
        tta_flip_axes: evaluate with test-time flips of these spatial axes (:class:`~medexplain.models.bagnet.
            FlipAveraged`); evidence models only.
        label_smoothing: label-smoothed cross-entropy with this ``eps`` ("ce" losses).
        ordinal_sigma: Gaussian soft targets over ordered grades with this width (see :class:`Objective`).
        init_from: a trained run folder of the same model whose weights start the run (fine-tuning, e.g. on
            tiles, then whole images); tensors of another shape (a head for other classes) keep their
            initialisation and are listed in the run's ``config.json``.
        sibnet: arguments of :class:`~medexplain.train.sibnet.SIBnetLoss` for the ``"ce+sibnet"`` loss (default:
            its defaults, the non-collapsing formulation; ``medexplain.train.sibnet.PUBLISHED`` is the paper's).

    Defaults that depend on other settings (``loss``, ``sparsity_lambda``, ``lr``, ``weight_decay``) are filled in
    when the config is made, so a config always says what will run.
    """

    model: str
    model_args: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 30
    batch_size: int = 32
    lr: float | None = None
    optimizer: str = "adamw"
    weight_decay: float | None = None
    loss: str | None = None
    sparsity_lambda: float | None = None
    sparsity_on: str = "evidence"
    sparsity_warmup: int = 0
    class_weights: str | Sequence[float] | None = None
    size: int | None = None
    seed: int = 0
    patience: int | None = None
    monitor: str = "auroc"
    augment: bool = True
    ema_decay: float | None = None
    tta_flip_axes: Sequence[int] | None = None
    label_smoothing: float = 0.0
    ordinal_sigma: float = 0.0
    init_from: str | None = None
    sibnet: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        entry = MODELS.entry(self.model)
        resolved: dict[str, Any] = {"model_args": dict(self.model_args)}
        loss = self.loss or ("ce+sparsity" if entry.metadata.get("sparsity_lambda") else "ce")
        resolved["loss"] = loss
        if "sparsity" in loss and self.sparsity_lambda is None:
            resolved["sparsity_lambda"] = entry.metadata.get("sparsity_lambda")
        resolved["lr"] = float(self.lr if self.lr is not None else (1e-2 if self.optimizer == "sgd" else 1e-3))
        default_decay = 5e-4 if self.optimizer == "sgd" else 1e-2
        resolved["weight_decay"] = float(self.weight_decay if self.weight_decay is not None else default_decay)
        if self.class_weights is not None and not isinstance(self.class_weights, str):
            resolved["class_weights"] = tuple(float(w) for w in self.class_weights)
        if self.sibnet is not None:
            resolved["sibnet"] = dict(self.sibnet)
        if self.tta_flip_axes:
            resolved["tta_flip_axes"] = tuple(int(axis) for axis in self.tta_flip_axes)
        for name, value in resolved.items():
            object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise MedexplainError(f"unknown `optimizer` {self.optimizer!r}; available: {', '.join(OPTIMIZERS)}",
                                  parameter="optimizer")  # fmt: skip
        if self.monitor not in MONITORS:
            raise MedexplainError(f"unknown `monitor` {self.monitor!r}; available: {', '.join(MONITORS)}",
                                  parameter="monitor")  # fmt: skip
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise MedexplainError(f"`{name}` must be at least 1, got {getattr(self, name)}", parameter=name)
        reserved = sorted({"in_channels", "spatial_dims"} & set(self.model_args))
        if reserved:
            raise MedexplainError(f"model argument {reserved[0]!r} is taken from the data, do not give it")
        if isinstance(self.class_weights, str) and self.class_weights != "balanced":
            raise MedexplainError(f"`class_weights` must be 'balanced' or numbers, got {self.class_weights!r}",
                                  parameter="class_weights")  # fmt: skip
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise MedexplainError(f"`ema_decay` must lie in (0, 1), got {self.ema_decay}", parameter="ema_decay")

    @property
    def task(self) -> str:
        """``"ce"`` (classes) or ``"bce"`` (multi-label), from the loss."""
        return str(self.loss).partition("+")[0]

    @property
    def sparse(self) -> bool:
        return "sparsity" in str(self.loss)

    def settings(self, data: str) -> dict[str, Any]:
        """The settings recorded in the run folder (``config.json`` and the resume checkpoint) for ``data``.

        Optional features at their defaults are left out, so run folders written before they existed resume.
        """
        settings = {
            "model": self.model,
            "model_args": dict(self.model_args),
            "data": data,
            "loss": self.loss,
            "sparsity_lambda": self.sparsity_lambda if self.sparse else None,
            "sparsity_on": self.sparsity_on if self.sparse else None,
            "sparsity_warmup": int(self.sparsity_warmup) if self.sparse else 0,
            "class_weights": self.class_weights if self.class_weights is None or isinstance(self.class_weights, str)
            else list(self.class_weights),
            "optimizer": self.optimizer,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "epochs": int(self.epochs),
            "batch_size": int(self.batch_size),
            "size": self.size,
            "seed": int(self.seed),
            "patience": self.patience,
            "monitor": self.monitor,
            "augment": bool(self.augment),
        }  # fmt: skip
        if self.ema_decay:
            settings["ema_decay"] = float(self.ema_decay)
        if self.tta_flip_axes:
            settings["tta_flip_axes"] = list(self.tta_flip_axes)
        if self.label_smoothing:
            settings["label_smoothing"] = float(self.label_smoothing)
        if self.ordinal_sigma:
            settings["ordinal_sigma"] = float(self.ordinal_sigma)
        if self.init_from:
            settings["init_from"] = str(Path(self.init_from).resolve())
        if self.sibnet:
            settings["sibnet"] = dict(self.sibnet)
        return settings
